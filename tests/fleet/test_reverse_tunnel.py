"""A worker behind NAT: the orchestrator has no route to it, and reaches it through the
reverse SSH tunnel the worker keeps open (systemd restarts it when it drops)."""

from __future__ import annotations

import errno
import json
import socket
import time

import pytest

from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from tests.fleet.conftest import Provisioning, unit_property
from tests.fleet.harness import BRIDGE_ADDRESS, GATEWAY_PORT, Fleet

pytestmark = pytest.mark.fleet

PORT = 2201


def direct_connect_error(address: str) -> int | None:
    try:
        socket.create_connection((address, 22), timeout=3).close()
    except OSError as exc:
        return exc.errno
    return None


def tunnel_ssh(fleet: Fleet, argv: list[str]) -> list[str]:
    """ssh from natbox with the tunnel's own key and known_hosts, as the tunnel's account."""
    home = "/var/lib/superagent-tunnel"
    return [
        "sudo", "-u", "superagent-tunnel", "ssh", "-i", f"{home}/.ssh/id_ed25519",
        "-o", f"UserKnownHostsFile={home}/.ssh/known_hosts", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", str(GATEWAY_PORT), *argv,
        f"superagent-tunnel@{BRIDGE_ADDRESS}",
    ]  # fmt: skip


def test_a_host_behind_nat_is_reached_through_its_reverse_tunnel(
    provisioned: Provisioning,
) -> None:
    fleet = provisioned.fleet
    fleet.add_host("gateway", "gateway")
    nat = fleet.add_host(
        "natbox", "nat", superagent_reach="reverse-tunnel", reverse_tunnel_port=PORT,
        superagent_capabilities=["linux", "behind-nat"],
    )  # fmt: skip
    try:
        assert direct_connect_error(nat.address) == errno.EHOSTUNREACH

        # Provisioned once where it can be reached (its LAN), which opens the tunnel...
        fleet.route_to_nat(True)
        try:
            first = fleet.playbook(limit="natbox:tunnel_endpoints", label="tunnel-bootstrap")
        finally:
            fleet.route_to_nat(False)
            fleet.close_ssh_masters()
        assert first.rc == 0, first.tail()
        assert unit_property(fleet, "natbox", "ActiveState", "superagent-tunnel") == "active"

        # ...then, with no route to it, the inventory reaches it through the tunnel.
        fleet.set_host_vars("natbox", ansible_host="127.0.0.1", ansible_port=PORT)
        assert direct_connect_error(nat.address) == errno.EHOSTUNREACH
        assert fleet.ssh("natbox", "hostname").stdout.strip() == "natbox"
        stats = fleet.ssh(
            "natbox",
            f"{WORKER_CONTROL} queue stats --db {WORKER_QUEUE_DB} --json",
            user="superagent",
        )
        beats = {b["worker_id"]: b for b in json.loads(stats.stdout)["heartbeats"]}
        assert beats["natbox"]["status"] == "idle"
        again = fleet.playbook(limit="natbox:tunnel_endpoints", label="tunnel-rerun")
        assert again.rc == 0, again.tail()
        assert again.recap["natbox"]["changed"] == 0, again.changed_tasks()

        # The tunnel's key opens its own port and nothing else: no other port, no shell.
        other_port = fleet.exec(
            "natbox",
            tunnel_ssh(fleet, ["-N", "-o", "ExitOnForwardFailure=yes",
                               "-R", f"127.0.0.1:{PORT + 1}:localhost:22"]),
            check=False, timeout=60,
        )  # fmt: skip
        assert other_port.returncode != 0
        assert "forwarding failed" in other_port.stderr, other_port.stderr
        shell = fleet.exec("natbox", [*tunnel_ssh(fleet, []), "id"], check=False, timeout=60)
        assert shell.returncode != 0 and "uid=" not in shell.stdout

        # A dropped tunnel comes back by itself.
        restarts = int(unit_property(fleet, "natbox", "NRestarts", "superagent-tunnel"))
        fleet.exec("natbox", ["systemctl", "kill", "--signal=SIGKILL", "superagent-tunnel"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            back = fleet.ssh("natbox", "hostname", check=False, timeout=15)
            now = int(unit_property(fleet, "natbox", "NRestarts", "superagent-tunnel"))
            if back.returncode == 0 and now > restarts:
                break
            time.sleep(1)
        else:
            pytest.fail("the tunnel did not come back within 60 s")
    finally:
        fleet.remove_host("natbox")
        fleet.remove_host("gateway")
