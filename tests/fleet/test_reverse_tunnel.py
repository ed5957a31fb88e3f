"""A worker behind NAT: the orchestrator has no route to it, and reaches it through the
reverse SSH tunnel the worker keeps open (systemd restarts it when it drops), from its
first provisioning on, with its inventory entry unchanged (its LAN address stays in it).

It is also how the fleet tests add a machine: one inventory entry, then `make provision
LIMIT=<it>` touches it (and its tunnel's endpoint) alone; a host of its own for that was
one more fresh provisioning (a minute or more) for the same path."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import time
from typing import Any

import pytest

from control.inventory import load_inventory
from tests.fleet.conftest import Provisioning, unit_property, worker_check
from tests.fleet.harness import BRIDGE_ADDRESS, GATEWAY_PORT, Fleet
from tests.fleet.runs import control, make_provision

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


def tunnelled(fleet: Fleet, command: str, **how: Any) -> subprocess.CompletedProcess[str]:
    """ssh to natbox the orchestrator's way, at its tunnel's end (no route to its LAN)."""
    return fleet.ssh("natbox", command, address="127.0.0.1", port=PORT, **how)


def test_a_new_host_behind_nat_is_provisioned_alone_and_reached_through_its_tunnel(
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
        # A machine added with one inventory entry, never met before...
        assert "natbox" in [w.name for w in load_inventory(fleet.inventory_dir)]
        assert nat.address not in fleet.known_hosts.read_text()

        # ...is provisioned alone by one command (its tunnel's endpoint with it), once where
        # it can be reached (its LAN), which opens the tunnel...
        fleet.route_to_nat(True)
        try:
            first = make_provision(fleet, "LIMIT=natbox", label="tunnel-bootstrap")
        finally:
            fleet.route_to_nat(False)
            fleet.close_ssh_masters()
        assert first.rc == 0, first.tail()
        assert set(first.recap) == {"natbox", "gateway"}, first.recap  # no other host touched
        assert first.recap["natbox"]["changed"] > 0 and first.recap["natbox"]["failed"] == 0
        assert nat.address in fleet.known_hosts.read_text()
        code, report = worker_check(fleet, "natbox")
        assert code == 0, report
        assert unit_property(fleet, "natbox", "ActiveState") == "active"
        assert unit_property(fleet, "natbox", "ActiveState", "superagent-tunnel") == "active"

        # ...then, with no route to it and the inventory as it was (its LAN address), the
        # orchestrator reaches it through the tunnel: control and a second provisioning.
        assert direct_connect_error(nat.address) == errno.EHOSTUNREACH
        assert fleet.hosts["natbox"].vars.get("ansible_host") in (None, nat.address)
        inventory = (fleet.inventory_dir / "hosts.yml").read_text()
        health = control(fleet, "health", "--json")
        assert health.stdout, health.stderr
        seen = {w["worker"]: w for w in json.loads(health.stdout)["workers"]}
        assert seen["natbox"]["reachable"], seen["natbox"]
        assert seen["natbox"]["status"] == "idle", seen["natbox"]
        again = fleet.playbook(limit="natbox:tunnel_endpoints", label="tunnel-rerun")
        assert again.rc == 0, again.tail()
        assert again.recap["natbox"]["changed"] == 0, again.changed_tasks()
        assert (fleet.inventory_dir / "hosts.yml").read_text() == inventory
        assert tunnelled(fleet, "hostname").stdout.strip() == "natbox"

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
            back = tunnelled(fleet, "hostname", check=False, timeout=15)
            now = int(unit_property(fleet, "natbox", "NRestarts", "superagent-tunnel"))
            if back.returncode == 0 and now > restarts:
                break
            time.sleep(1)
        else:
            pytest.fail("the tunnel did not come back within 60 s")
    finally:
        fleet.remove_host("natbox")
        fleet.remove_host("gateway")
