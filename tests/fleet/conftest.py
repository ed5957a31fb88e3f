"""Fixtures of the fleet tests: real hosts (systemd-nspawn), provisioned by playbooks/site.yml.

`fleet` brings up host1..host3 (fresh ones, unless FLEET_REUSE=1 and they are up) and
removes them at the end of the session (FLEET_KEEP=1 keeps them for a look); the first
test that asks for `provisioned` pays for provisioning them twice (fresh, then the
idempotence run). Figures worth reading land in the terminal summary.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from tests.fleet.harness import (
    Fleet,
    PlaybookRun,
    build_wheels,
    missing_requirements,
    node_tarball,
    session_lock,
)
from tests.support import need

HOSTS = ("host1", "host2", "host3")
FIGURES: dict[str, Any] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fleet figures")
        terminalreporter.write_line(json.dumps(FIGURES, sort_keys=True))


def report(name: str, value: Any) -> None:
    """A figure for the terminal summary (timings, the unit's exposure)."""
    FIGURES[name] = value


@dataclass
class Provisioning:
    fleet: Fleet
    first: PlaybookRun
    second: PlaybookRun


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    problems = missing_requirements()
    need(not problems, "; ".join(problems))
    with session_lock():
        yield from _fleet()


def _fleet() -> Iterator[Fleet]:
    fleet = Fleet()
    reuse = os.environ.get("FLEET_REUSE") == "1" and fleet.is_up(HOSTS)
    if not reuse and fleet.hosts:
        # What an interrupted session left (hosts, bridge, proxy): taken down whole, as
        # `fleet-down` does, without the inventory or the key a fresh checkout lacks.
        fleet.down()
    build_wheels()
    node_tarball()
    fleet.up(names=HOSTS)
    try:
        yield fleet
    finally:
        if os.environ.get("FLEET_KEEP") != "1":
            fleet.down()


@pytest.fixture(scope="session")
def provisioned(fleet: Fleet) -> Provisioning:
    """The three hosts provisioned from scratch, then provisioned again."""
    first = fleet.playbook(label="provision")
    assert first.rc == 0, f"provisioning failed:\n{first.tail()}"
    second = fleet.playbook(label="reprovision")
    assert second.rc == 0, f"the second provisioning failed:\n{second.tail()}"
    report("provision_3_s", round(first.seconds, 1))
    report("reprovision_3_s", round(second.seconds, 1))
    report("changed_on_rerun", second.changed())
    return Provisioning(fleet, first, second)


# What the example web app's verify commands need on a worker, from Debian.
EXAMPLE_PACKAGES = ["python-is-python3", "python3-pytest", "python3-yaml"]


@pytest.fixture(scope="session")
def example_packages(provisioned: Provisioning) -> None:
    """The web-app example's packages on host1..host3, once a session (the modules that
    dispatch it each used to install them again), on the three hosts at once."""
    fleet = provisioned.fleet
    for host in HOSTS:
        if not fleet.running(host):
            fleet.start_host(host)
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        installs = [
            pool.submit(fleet.exec, host, ["apt-get", "install", "-y", "-q", *EXAMPLE_PACKAGES],
                        timeout=600)
            for host in HOSTS
        ]  # fmt: skip
        for install in installs:
            install.result()


def worker_check(fleet: Fleet, host: str) -> tuple[int, dict[str, Any]]:
    """`control worker check --json` on the host, as the worker's user."""
    done = fleet.exec(
        host,
        [
            "sudo",
            "-u",
            "superagent",
            WORKER_CONTROL,
            "worker",
            "check",
            "--json",
        ],
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def heartbeat(fleet: Fleet, host: str) -> dict[str, Any]:
    """The host's own heartbeat in its inbox (`control queue stats --json`)."""
    done = fleet.exec(
        host,
        ["sudo", "-u", "superagent", WORKER_CONTROL, "queue", "stats", "--db", WORKER_QUEUE_DB,
         "--json"],
    )  # fmt: skip
    beats = [b for b in json.loads(done.stdout)["heartbeats"] if b["worker_id"] == host]
    assert beats, f"no heartbeat from {host} in its inbox: {done.stdout}"
    return dict(beats[0])


def wait_heartbeat(
    fleet: Fleet,
    host: str,
    statuses: tuple[str, ...],
    *,
    after: float = 0.0,
    timeout_s: float = 90,
) -> dict[str, Any]:
    """The host's first heartbeat newer than `after` whose status is one of `statuses`: the
    daemon beats on its own clock, so a change on the host shows within a heartbeat or two."""
    deadline = time.monotonic() + timeout_s
    while (beat := heartbeat(fleet, host))["status"] not in statuses or beat["beat_at"] <= after:
        assert time.monotonic() < deadline, f"{host}'s heartbeat is not {statuses}: {beat}"
        time.sleep(1)
    return beat


def unit_property(fleet: Fleet, host: str, prop: str, unit: str = "superagent-worker") -> str:
    return fleet.exec(
        host, ["systemctl", "show", unit, f"--property={prop}", "--value"]
    ).stdout.strip()


# The order the fleet tests read best in (and provisioning first, which pays for the rest).
_ORDER = (
    "test_provision",
    "test_versions",
    "test_host_keys",
    "test_reverse_tunnel",
)

# Last: the rolling upgrade leaves the hosts on other pins than the ones the rest expect.
_LAST = ("test_lifecycle",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slots = [i for i, item in enumerate(items) if "/tests/fleet/" in str(item.path)]
    fleet_items = [items[i] for i in slots]

    def rank(item: pytest.Item) -> int:
        name = item.path.stem
        if name in _LAST:
            return len(_ORDER) + 1 + _LAST.index(name)
        return _ORDER.index(name) if name in _ORDER else len(_ORDER)

    for slot, item in zip(slots, sorted(fleet_items, key=rank), strict=True):
        items[slot] = item
