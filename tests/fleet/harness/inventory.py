"""The fleet's Ansible inventory (.fleet/inventory): hosts.yml by kind, the group
variables that say how to reach the hosts and where Node and Claude Code come from, and a
vault with the stand-in API key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

from tests.fleet.harness.config import PROXY_URL
from tests.fleet.harness.host import Host
from tests.fleet.harness.line import fleet_line, node_vars

HEADER = "---\n# Written by tests/fleet/harness for the test fleet; do not edit.\n"


def group_vars(key: Path, known_hosts: Path) -> dict[str, Any]:
    """Variables of the fleet's group `all`: how to reach the hosts, where things come from,
    and the line of pins they run (SUPERAGENT_FLEET_PROFILE, see `line`)."""
    pins = fleet_line()
    return {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known_hosts} -o IdentitiesOnly=yes "
            "-o KexAlgorithms=curve25519-sha256"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "superagent_known_hosts_file": str(known_hosts),
        **({"superagent_pins_profile": pins.profile} if pins.profile else {}),
        "nodejs_source": "controller_tarball",
        **node_vars(pins),
        "claude_code_source": "npm",
        "claude_code_npm_environment": {
            "npm_config_https_proxy": PROXY_URL,
            "npm_config_proxy": PROXY_URL,
            "npm_config_cafile": "/etc/ssl/certs/ca-certificates.crt",
        },
        "worker_authorized_keys": [key.with_suffix(".pub").read_text().strip()],
        "worker_poll_seconds": 10,
        "reverse_tunnel_endpoint": "gateway",
    }


def hosts_yml(hosts: list[Host]) -> dict[str, Any]:
    """hosts.yml: the workers (direct or behind NAT) and the tunnel endpoint."""
    workers: dict[str, Any] = {}
    endpoints: dict[str, Any] = {}
    for host in sorted(hosts, key=lambda h: h.index):
        entry: dict[str, Any] = {"ansible_host": host.address}
        if host.ssh_port != 22:
            entry["ansible_port"] = host.ssh_port
        if host.kind == "gateway":
            endpoints[host.name] = entry
            continue
        entry.update(
            superagent_capabilities=["linux"],
            superagent_slots=1,
            superagent_transport="ssh",
            superagent_reach="direct",
        )
        entry.update(host.vars)
        workers[host.name] = entry
    return {
        "all": {
            "children": {
                "workers": {"hosts": workers or None},
                "tunnel_endpoints": {"hosts": endpoints or None},
            }
        }
    }


def vault_yml(api_key: str, vault_password_file: Path) -> str:
    """group_vars/all/vault.yml holding `api_key`, encrypted with the checkout's vault
    password the way `ansible-vault encrypt_string` writes it (in this process: no second
    of Ansible starting up on every inventory change)."""
    password = vault_password_file.read_text().strip().encode()
    encrypted = VaultLib([("default", VaultSecret(password))]).encrypt(api_key).decode()
    body = "".join(f"          {line}\n" for line in encrypted.splitlines())
    return f"{HEADER}claude_code_api_key: !vault |\n{body}"


def write_inventory(
    inventory_dir: Path, hosts: list[Host], variables: dict[str, Any], api_key: str,
    vault_password_file: Path,
) -> None:  # fmt: skip
    """hosts.yml, group_vars/all/{main,vault}.yml. The vault is written from `api_key` every
    time: the key is the machine's (the fleet's state file, which another checkout's session
    may recreate with a new one), the vault the checkout's, so the two must never disagree."""
    directory = inventory_dir / "group_vars/all"
    directory.mkdir(parents=True, exist_ok=True)
    (inventory_dir / "hosts.yml").write_text(
        HEADER + yaml.safe_dump(hosts_yml(hosts), sort_keys=False, width=1000)
    )
    (directory / "main.yml").write_text(
        HEADER + yaml.safe_dump(variables, sort_keys=False, width=1000)
    )
    vault = directory / "vault.yml"
    partial = vault.with_suffix(".tmp")
    partial.write_text(vault_yml(api_key, vault_password_file))
    partial.chmod(0o600)
    partial.replace(vault)
