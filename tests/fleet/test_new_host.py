"""Adding a machine: one inventory entry, then `make provision LIMIT=<it>` touches it alone."""

from __future__ import annotations

import pytest

from control.inventory import load_inventory
from tests.fleet.conftest import Provisioning, unit_property, wait_heartbeat, worker_check
from tests.fleet.harness import REPO, parse_recap, run

pytestmark = pytest.mark.fleet


def test_a_new_host_is_provisioned_alone(provisioned: Provisioning) -> None:
    fleet = provisioned.fleet
    host = fleet.add_host("host4")
    try:
        assert "host4" in [w.name for w in load_inventory(fleet.inventory_dir)]
        assert host.address not in fleet.known_hosts.read_text()
        env = fleet.ansible_env()
        env.pop("ANSIBLE_VAULT_PASSWORD_FILE")
        done = run(
            ["make", "--no-print-directory", "provision", f"INVENTORY={fleet.inventory_dir}",
             "LIMIT=host4", f"VAULT_PASSWORD_FILE={fleet.vault_password_file}"],
            check=False, env=env, cwd=REPO, timeout=1200,
        )  # fmt: skip
        output = done.stdout + done.stderr
        (fleet.logs / "new-host.log").write_text(output)
        assert done.returncode == 0, output[-4000:]
        recap = parse_recap(output)
        assert set(recap) == {"host4"}, recap  # the others were not touched
        assert recap["host4"]["changed"] > 0 and recap["host4"]["failed"] == 0
        assert host.address in fleet.known_hosts.read_text()
        code, report = worker_check(fleet, "host4")
        assert code == 0, report
        assert unit_property(fleet, "host4", "ActiveState") == "active"
        wait_heartbeat(fleet, "host4", ("idle",))
    finally:
        fleet.remove_host("host4")
