"""A rolling upgrade of local workers (real daemons) while a run goes on: each host is
drained, waited for, "provisioned" (restarted, as the worker role's handler does),
checked and undrained; a host that comes back refusing stops the rollout and stays
drained with the reason, and the run finishes with no phase lost or failed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from control.inventory import Worker, load_inventory
from control.localfleet import LocalFleet, WorkerShape
from control.queue import Queue
from control.transport import Transports
from control.upgrade import RolloutSettings, UpgradeFailed, rolling_upgrade
from tests.integration.conftest import Pipeline, parse_events, write_spec

pytestmark = pytest.mark.slow

PHASES = [
    {
        "id": name,
        "title": name,
        "task": f"Write {name}.txt saying done.",
        "deliverables": [f"{name}.txt"],
        "verify": [f"grep -qx done {name}.txt"],
    }
    for name in ("a", "b", "c", "d", "e", "f")
]


def restarting(fleet: LocalFleet, *, broken: str | None = None) -> object:
    """A provisioner that restarts each host's worker (and, for `broken`, pins a
    superagent version it is not, so it comes back refusing work)."""
    done: list[str] = []

    def provision(hosts: Sequence[Worker]) -> None:
        for host in hosts:
            fleet.stop(host.name)
            if host.name == broken:
                config = fleet.workers[host.name].config
                config.write_text(config.read_text() + 'superagent = "0.0.1"\n')
            fleet.start(host.name)
            done.append(host.name)

    provision.done = done  # type: ignore[attr-defined]
    return provision


def start(pipeline: Pipeline, tmp_path: Path) -> tuple[LocalFleet, object]:
    pipeline.plan({p["id"]: {"delay_s": 1, "files": {f"{p['id']}.txt": "done\n"}} for p in PHASES})
    fleet = pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"), WorkerShape("w3"))
    process = pipeline.start_dispatch(write_spec(tmp_path / "spec.json", PHASES))
    return fleet, process


def test_a_rolling_upgrade_of_three_hosts_under_a_run_loses_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    fleet, process = start(pipeline, tmp_path)
    workers = load_inventory(fleet.inventory)
    provision = restarting(fleet)
    transports = Transports(inventory=fleet.inventory)
    try:
        rollout = rolling_upgrade(
            workers, transports, provision, RolloutSettings(poll_s=0.2, health_timeout_s=30)
        )
    finally:
        transports.close()
    assert rollout.ok, rollout.to_dict()
    assert provision.done == ["w1", "w2", "w3"]  # type: ignore[attr-defined]
    out, err = process.communicate(timeout=180)  # type: ignore[attr-defined]
    assert process.returncode == 0, err  # type: ignore[attr-defined]
    events = parse_events(out)
    assert events[-1]["status"] == "done"
    assert not [e for e in events if e.get("event") in ("phase_lost", "phase_retry")]
    for name in ("w1", "w2", "w3"):
        with Queue(fleet.workers[name].queue_db, create=False) as queue:
            assert queue.drained() is None


def test_a_host_failing_its_check_stops_the_rollout_and_stays_drained(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    fleet, process = start(pipeline, tmp_path)
    workers = load_inventory(fleet.inventory)
    provision = restarting(fleet, broken="w2")
    transports = Transports(inventory=fleet.inventory)
    try:
        rollout = rolling_upgrade(
            workers, transports, provision, RolloutSettings(poll_s=0.2, health_timeout_s=20)
        )
    finally:
        transports.close()
    assert not rollout.ok
    assert [(s.host, s.ok) for s in rollout.steps] == [("w1", True), ("w2", False)]
    assert "refusing" in (rollout.stopped or "")
    assert provision.done == ["w1", "w2"]  # type: ignore[attr-defined]  w3 untouched
    with Queue(fleet.workers["w2"].queue_db, create=False) as queue:
        flag = queue.drained()
        assert flag is not None and "upgrade failed: " in (flag.reason or "")
    with Queue(fleet.workers["w3"].queue_db, create=False) as queue:
        assert queue.drained() is None
    # The others keep working: w2 refuses and is written off, the run still finishes.
    out, err = process.communicate(timeout=180)  # type: ignore[attr-defined]
    assert process.returncode == 0, err  # type: ignore[attr-defined]
    events = parse_events(out)
    assert events[-1]["status"] == "done"
    assert not [e for e in events if e.get("event") == "phase_retry"]
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "control",
            "health",
            "--inventory",
            str(fleet.inventory),
            "--json",
            "--state",
            str(tmp_path / "no-state.db"),
        ],  # never this machine's default one
        capture_output=True,
        text=True,
        check=False,
    )
    health = json.loads(answer.stdout)
    (w2,) = [w for w in health["workers"] if w["worker"] == "w2"]
    assert "upgrade failed" in w2["drained"]["reason"]


def test_a_provisioning_that_fails_stops_the_rollout_at_that_host(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan({})
    fleet = pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    workers = load_inventory(fleet.inventory)

    def provision(hosts: Sequence[Worker]) -> None:
        raise UpgradeFailed("ansible-playbook exited 2: unreachable")

    transports = Transports(inventory=fleet.inventory)
    try:
        rollout = rolling_upgrade(workers, transports, provision, RolloutSettings(poll_s=0.2))
    finally:
        transports.close()
    assert rollout.stopped == "w1: provisioning failed: ansible-playbook exited 2: unreachable"
    with Queue(fleet.workers["w2"].queue_db, create=False) as queue:
        assert queue.drained() is None


def test_control_upgrade_stops_at_a_host_ansible_cannot_provision(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan({})
    fleet = pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    answer = subprocess.run(
        [
            sys.executable, "-m", "control", "upgrade", "--inventory", str(fleet.inventory),
            "--playbook", str(tmp_path / "missing.yml"), "--json",
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert answer.returncode == 1, answer.stderr
    report = json.loads(answer.stdout)
    assert report["ok"] is False and report["stopped"].startswith("w1: provisioning failed")
    assert "missing.yml could not be found" in report["stopped"]  # ansible's own words
    assert report["repinned"] == []  # a fleet half upgraded: the runs keep their pins
    with Queue(fleet.workers["w1"].queue_db, create=False) as queue:
        flag = queue.drained()
        assert flag is not None and (flag.reason or "").startswith("upgrade failed")
    with Queue(fleet.workers["w2"].queue_db, create=False) as queue:
        assert queue.drained() is None
