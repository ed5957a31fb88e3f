"""A machine's life under running work, on the real fleet: drained (what it runs finishes
there, nothing new arrives; `--now` moves it), removed mid-run (its phase finishes
elsewhere).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.demo import EXAMPLES
from tests.fleet.harness import Fleet
from tests.fleet.runs import (
    Watch,
    control,
    dispatched,
    done_once,
    sleepy_spec,
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


def test_a_host_removed_mid_run_has_its_phase_finished_on_another(
    ready: tuple[Fleet, GitServer], undrained: None, tmp_path: Path
) -> None:
    fleet, state, watch = start_sleepy(ready, tmp_path, "remove", {"slow": (20, [])})
    try:
        victim = watch.wait(dispatched("slow"))["worker"]
        wait_claimed(fleet, victim)
        removed = control(fleet, "remove", victim, "--json", state=state)
        assert removed.returncode == 0, removed.stderr
        what = json.loads(removed.stdout)
        assert what["drained"] is True and [r.split("/")[-1] for r in what["reassigned"]] == [
            "slow"
        ]
        seen = watch.finish()
    finally:
        watch.stop()
    workers = done_once(seen)
    assert workers["slow"] != victim
    assert not [e for e in seen if e.get("event") in FAILED]
    assert seen[-1]["status"] == "done"
