"""The test fleet's vault follows the fleet's API key. The key is the machine's (the
fleet's state file, which another checkout's session may recreate with a new stand-in
key), the vault the checkout's: a vault written once and kept gave the hosts one key
while the tests looked for the other. Checked with Ansible itself reading the inventory,
no fleet needed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fleet.harness.config import REPO
from tests.fleet.harness.host import Host
from tests.fleet.harness.inventory import write_inventory
from tests.fleet.harness.playbook import ansible_env
from tests.fleet.harness.system import run


def key_ansible_reads(inventory: Path, env: dict[str, str]) -> str:
    """claude_code_api_key of host1 as Ansible sees it (the vault decrypted)."""
    out = run(
        [REPO / ".venv/bin/ansible", "host1", "-i", inventory, "-c", "local",
         "-m", "debug", "-a", "var=claude_code_api_key", "-o"],
        env=env,
    ).stdout  # fmt: skip
    return str(json.loads(out.split("=>", 1)[1])["claude_code_api_key"])


def test_the_vault_is_rewritten_when_the_fleets_key_changes(tmp_path: Path) -> None:
    password = tmp_path / "vault-password"
    password.write_text("a-checkouts-vault-password\n")
    env = ansible_env(tmp_path / "cp", password)
    inventory = tmp_path / "inventory"
    hosts = [Host("host1", 1)]
    write_inventory(inventory, hosts, {}, "sk-ant-fleet-first", password)
    assert key_ansible_reads(inventory, env) == "sk-ant-fleet-first"
    # Another checkout's session recreated the fleet, with a new key.
    write_inventory(inventory, hosts, {}, "sk-ant-fleet-second", password)
    vault = (inventory / "group_vars/all/vault.yml").read_text()
    assert "sk-ant-fleet" not in vault  # encrypted, never in clear
    assert key_ansible_reads(inventory, env) == "sk-ant-fleet-second"
    assert sorted(p.name for p in (inventory / "group_vars/all").iterdir()) == [
        "main.yml",
        "vault.yml",
    ]
