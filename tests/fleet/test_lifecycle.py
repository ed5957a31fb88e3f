"""A machine's life under running work, on the real fleet: drained (what it runs finishes
there, nothing new arrives; `--now` moves it), removed mid-run by `control remove` or
deleted from the inventory (their phases finish elsewhere), and the whole fleet upgraded
host by host from the Node 20 line to the Node 22 one while the web-app example runs (on
the node22 profile, SUPERAGENT_FLEET_PROFILE, from it back to the default line): a host
that fails stops the rollout and stays drained, the others work on, and after the fix the
run finishes with every phase done once.

Runs last (conftest's order): the upgrade leaves the hosts on the other line.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from control import events
from control.demo import EXAMPLES
from control.state import StateStore
from tests.fleet.conftest import heartbeat, report
from tests.fleet.harness import Fleet
from tests.fleet.harness.line import fleet_line, line_vars, other_line
from tests.fleet.runs import (
    Watch,
    control,
    dispatched,
    done_once,
    sleepy_spec,
    upgrade,
    wait_claimed,
)
from tests.fleet.test_dispatch import GitServer, dispatch, ready, use_transport

pytestmark = pytest.mark.fleet
__all__ = ["ready"]  # the module fixture: hosts up, a git server on the bridge

HOSTS = ("host1", "host2", "host3")
FAILED = ("phase_retry", "phase_dead", "run_failed")


def start_sleepy(
    ready: tuple[Fleet, GitServer],
    tmp_path: Path,
    name: str,
    phases: dict[str, tuple[int, list[str]]],
) -> tuple[Fleet, Path, Watch]:
    """A run of `sleepy_spec(phases)` over ssh in the background: (fleet, its state, watch)."""
    fleet, server = ready
    use_transport(fleet, "ssh")
    url = server.new_remote(name, EXAMPLES / "seed" / "tiny")
    state = tmp_path / "state.db"
    spec = sleepy_spec(tmp_path / f"{name}.json", phases)
    return fleet, state, Watch(dispatch(fleet, spec, url, state, background=True))


@pytest.fixture
def undrained(ready: tuple[Fleet, GitServer]) -> Iterator[None]:
    """Every host undrained after the test, whatever it left."""
    yield
    fleet, _ = ready
    for host in HOSTS:
        control(fleet, "undrain", host)


def test_a_drained_host_finishes_its_phase_and_drain_now_moves_one(
    ready: tuple[Fleet, GitServer], undrained: None, tmp_path: Path
) -> None:
    fleet, state, watch = start_sleepy(
        ready, tmp_path, "drain", {"a": (20, []), "b": (20, []), "c": (1, ["a"])}
    )
    try:
        kept = watch.wait(dispatched("a"))["worker"]
        moved = watch.wait(dispatched("b"))["worker"]
        wait_claimed(fleet, kept)
        wait_claimed(fleet, moved)
        drained_at = time.time()
        drain = control(fleet, "drain", kept, "--json", state=state)
        assert drain.returncode == 0, drain.stderr
        assert json.loads(drain.stdout)["drained"]["now"] is False
        now = control(fleet, "drain", moved, "--now", state=state)
        assert now.returncode == 0, now.stderr
        health = json.loads(control(fleet, "health", "--json", state=state).stdout)
        flags = {w["worker"]: w.get("drained") for w in health["workers"]}
        assert flags[kept] and flags[moved] and not flags[({*HOSTS} - {kept, moved}).pop()]
        seen = watch.finish()
    finally:
        watch.stop()
    (third,) = {*HOSTS} - {kept, moved}
    workers = done_once(seen)
    assert workers == {"a": kept, "b": third, "c": third}  # c would have followed a to `kept`
    late = [e for e in seen if e.get("event") == "dispatched" and e.get("at", 0) > drained_at]
    assert {e["worker"] for e in late} <= {third}, late  # nothing new reached a drained host
    assert [e["phase"] for e in seen if e.get("event") == "phase_lost"] == ["b"]
    assert not [e for e in seen if e.get("event") in FAILED]
    assert seen[-1]["status"] == "done"


def without_host(inventory: Path, host: str) -> None:
    """Delete `host`'s entry from the inventory's hosts.yml, as the operator does."""
    hosts = inventory / "hosts.yml"
    data = yaml.safe_load(hosts.read_text())
    del data["all"]["children"]["workers"]["hosts"][host]
    hosts.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_host_removed_mid_run_has_its_phase_finished_on_another(
    ready: tuple[Fleet, GitServer], undrained: None, tmp_path: Path
) -> None:
    """Two hosts leave the fleet under a run, a phase running on each: one by `control
    remove` (drained, its phase moved at once), one deleted from the run's inventory (the
    run resumed on it moves that phase too and is owed nothing by the host it cannot
    reach). Both phases finish on the third host, once each."""
    fleet, server = ready
    use_transport(fleet, "ssh")
    inventory = tmp_path / "inventory"  # the run's own: the fleet's stays whole for the rest
    shutil.copytree(fleet.inventory_dir, inventory)
    url = server.new_remote("remove", EXAMPLES / "seed" / "tiny")
    state = tmp_path / "state.db"
    spec = sleepy_spec(tmp_path / "remove.json", {"slow": (20, []), "gone": (20, [])})
    watch = Watch(dispatch(fleet, spec, url, state, background=True, inventory=inventory))
    try:
        removed = watch.wait(dispatched("slow"))["worker"]
        deleted = watch.wait(dispatched("gone"))["worker"]
        wait_claimed(fleet, removed)
        wait_claimed(fleet, deleted)
        out = control(fleet, "remove", removed, "--json", state=state, inventory=inventory)
        assert out.returncode == 0, out.stderr
        what = json.loads(out.stdout)
        assert what["drained"] is True
        assert [r.split("/")[-1] for r in what["reassigned"]] == ["slow"]
        watch.stop()  # the orchestrator stopped while `deleted` runs `gone`
        before = list(watch.seen)
        without_host(inventory, deleted)
        watch = Watch(dispatch(fleet, spec, url, state, background=True, inventory=inventory))
        seen = before + watch.finish()
    finally:
        watch.stop()
    (third,) = {*HOSTS} - {removed, deleted}
    assert done_once(seen) == {"slow": third, "gone": third}
    lost = {e["phase"]: e["reason"] for e in seen if e.get("event") == "phase_lost"}
    assert lost == {"gone": f"worker {deleted} is no longer in the inventory"}, lost
    assert not [e for e in seen if e.get("event") in FAILED]
    assert seen[-1]["status"] == "done"
    store = StateStore(state)
    try:
        assert store.owed_cancels() == []
        found = events.read(store.conn, limit=-1)
        assert [(e.worker, e.detail["count"]) for e in found if e.kind == "cancels_dropped"] == [
            (deleted, 1)
        ]
    finally:
        store.close()
    health = control(fleet, "health", "--json", state=state, inventory=inventory)
    assert json.loads(health.stdout)["gone"] == [deleted], health.stdout
    out = control(fleet, "remove", deleted, "--json", state=state, inventory=inventory)
    cleared = json.loads(out.stdout)
    assert (cleared["drained"], cleared["reassigned"], cleared["cancels_dropped"]) == (
        False,
        [],
        0,
    ), cleared


def test_a_rolling_upgrade_to_the_node_22_line_under_a_run_loses_nothing(
    ready: tuple[Fleet, GitServer], undrained: None, tmp_path: Path
) -> None:
    fleet, server = ready
    use_transport(fleet, "ssh")
    line = other_line()  # the Node 22 line from the default; back to it on the node22 profile
    new = line_vars(line)  # the change: the other line of pins.json
    # The inventory pins the fleet's line (so the run records it), as a fleet about to move does.
    pins = fleet_line()
    old = {"nodejs_version": pins.node, "claude_code_version": pins.claude_code}
    for host in HOSTS:
        fleet.set_host_vars(host, **old)
    url = server.new_remote("upgrade", EXAMPLES / "seed" / "webapp")
    state = tmp_path / "state.db"
    replay = ("--agent", "replay", "--replay-dir", str(EXAMPLES / "replay" / "webapp"))
    watch = Watch(dispatch(fleet, EXAMPLES / "webapp.json", url, state, *replay, background=True))
    try:
        # Under way: the first phase (only host1 has docker) done there, the rest to come.
        watch.wait(lambda e: e.get("event") == "phase_done" and e.get("phase") == "schema")
        store = StateStore(state)
        try:
            latest = store.latest_run()
        finally:
            store.close()
        assert latest is not None
        run_id = latest.id
        # The inventory moves to the other line; host2 will come back refusing work
        # (its worker pinned to a Claude Code it does not have).
        for host in HOSTS:
            fleet.set_host_vars(host, **new)
        fleet.set_host_vars("host2", worker_pin_claude_code="0.0.1", worker_health_timeout=10)
        began = time.time()
        code, first, _ = upgrade(fleet, state)
        stopped = time.time()
        assert code == 1, first
        steps = [(s["host"], s["ok"]) for s in first["steps"]]
        assert steps == [("host1", True), ("host2", False)], first
        assert first["repinned"] == []  # half the fleet moved: the run keeps its pins
        health = json.loads(control(fleet, "health", "--json", state=state).stdout)
        flags = {w["worker"]: w.get("drained") for w in health["workers"]}
        assert "upgrade failed" in flags["host2"]["reason"], flags
        assert not flags["host1"] and not flags["host3"]
        # Work went on meanwhile, on the host still on the run's versions.
        watch.wait(
            lambda e: e.get("event") == "phase_done" and e["worker"] == "host3"
            and began < e["at"] < stopped
        )  # fmt: skip

        fleet.set_host_vars("host2", worker_pin_claude_code=None, worker_health_timeout=None)
        code, second, seconds = upgrade(fleet, state)
        assert code == 0, second
        assert [(s["host"], s["ok"]) for s in second["steps"]] == [(h, True) for h in HOSTS], second
        assert second["repinned"] == [run_id]
        seen = watch.finish()
    finally:
        watch.stop()
        # The inventory as it was (a reused fleet is provisioned back to it); the hosts stay
        # on the other line until then.
        gone = dict.fromkeys([*new, *old, "worker_pin_claude_code", "worker_health_timeout"])
        for host in HOSTS:
            fleet.set_host_vars(host, **gone)
    workers = done_once(seen)
    assert set(workers) == {"schema", "api-auth", "api-tasks", "frontend", "e2e",
                            "windows-paths", "docs", "release"}  # fmt: skip
    assert not [e for e in seen if e.get("event") in FAILED]
    assert seen[-1]["status"] == "done"
    for host in HOSTS:
        versions = heartbeat(fleet, host)["versions"]
        assert versions["node"].removeprefix("v") == line.node, versions
        assert versions["claude_code"] == line.claude_code, versions
    report("rolling_upgrade_3_s", round(seconds, 1))
    report("lost_phases_during_upgrade", 8 - len(workers))
    losses = [e for e in seen if e.get("event") == "phase_lost"]
    report("machine_losses_during_upgrade", len(losses))  # moved, not lost: no attempt used
    moved = [e for e in seen if e.get("event") == "phase_moved"]
    report("phases_moved_during_upgrade", len(moved))  # sent as its host was drained
