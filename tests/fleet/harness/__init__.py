"""The test fleet: real Debian hosts on this machine, for the roles, the unit and SSH.

Each host is a Debian bookworm root filesystem (an overlay on a cached base image)
booted by systemd-nspawn with its own systemd, network namespace, address, sshd, host
keys and machine-id. `make fleet-up` / `make fleet-down` and the fleet tests' fixtures
drive it through `Fleet`; see docs/provisioning.md and /work/shared/TEST-FLEET.md.

One module per concern: config (directories, addresses), system (commands, processes,
locks), cgroups, base_image, artifacts (Node, Claude Code, wheels), host, rootfs, network
(bridge, namespaces, NAT), proxy, nspawn (boot and power), ssh, inventory, playbook, fleet
(the state and the order of things) and cli. The names below are what the tests use.
"""

from tests.fleet.harness.artifacts import build_wheels, claude_code_tarballs, node_tarball
from tests.fleet.harness.config import BRIDGE_ADDRESS, GATEWAY_PORT, REPO
from tests.fleet.harness.fleet import Fleet
from tests.fleet.harness.host import Host
from tests.fleet.harness.playbook import PlaybookRun, parse_recap
from tests.fleet.harness.system import FleetError, missing_requirements, run, session_lock

__all__ = [
    "BRIDGE_ADDRESS",
    "GATEWAY_PORT",
    "REPO",
    "Fleet",
    "FleetError",
    "Host",
    "PlaybookRun",
    "build_wheels",
    "claude_code_tarballs",
    "missing_requirements",
    "node_tarball",
    "parse_recap",
    "run",
    "session_lock",
]
