"""`control dispatch` end to end on real local workers: failures included.

Real worker processes, a real bare git remote, the `command` agent backend running
a scripted agent CLI; workers and the orchestrator are killed with real signals.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control.localfleet import LocalFleet, WorkerShape
from control.queue import Message, Queue
from control.state import StateStore
from tests.integration.conftest import Pipeline, parse_events, write_spec
from tests.support import kill_tree

pytestmark = pytest.mark.slow

TWO_PHASES = [
    {
        "id": "first",
        "title": "First",
        "task": "Write first.txt holding the word one and nothing else.",
        "deliverables": ["first.txt"],
        "verify": ["grep -qx one first.txt"],
    },
    {
        "id": "second",
        "title": "Second",
        "task": "Write second.txt holding the word two, next to first.txt.",
        "deliverables": ["second.txt"],
        "verify": ["grep -qx two second.txt", "test -f first.txt"],
        "depends_on": ["first"],
    },
]
PLAN = {
    "first": {"files": {"first.txt": "one\n"}},
    "second": {"files": {"second.txt": "two\n"}},
}


def inbox_messages(pipeline: Pipeline) -> list[dict[str, Any]]:
    assert pipeline.fleet is not None
    found = []
    for worker in pipeline.fleet.workers.values():
        with Queue(worker.queue_db, create=False) as queue:
            found += [m.to_dict() | {"worker": worker.name} for m in queue.messages(limit=1000)]
    return found


def message(queue: Queue, key: str) -> Message:
    return next(m for m in queue.messages(limit=1000) if m.key == key)


def wait_for_event(process: Any, kind: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == kind:
            return event
    raise AssertionError(f"no {kind} event; stderr: {process.stderr.read()}")


def kill_a_worker_mid_phase(
    pipeline: Pipeline,
    tmp_path: Path,
    step: dict[str, Any] | None = None,
    verify: list[str] | None = None,
    ready: Callable[[], bool] | None = None,
    **defaults: Any,
) -> tuple[LocalFleet, subprocess.Popen[str], str]:
    """Two workers, one slow phase dispatched; once its agent has started (or `ready`
    says so), its worker (daemon and agent alike) is SIGKILLed. Returns the fleet, the
    running dispatch and the killed worker's name."""
    pipeline.plan({"slow": step or {"delay_s": 3, "files": {"slow.txt": "done\n"}}})
    fleet = pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    spec = write_spec(
        tmp_path / "spec.json",
        [
            {
                "id": "slow",
                "title": "Slow",
                "task": "Take a while, then write slow.txt saying done.",
                "deliverables": ["slow.txt"],
                "verify": verify or ["grep -qx done slow.txt"],
            }
        ],
        **defaults,
    )
    process = pipeline.start_dispatch(spec)
    victim = str(wait_for_event(process, "dispatched")["worker"])
    started = ready or (lambda: any(r["event"] == "start" for r in pipeline.agent_runs()))
    deadline = time.monotonic() + 30
    while not started():
        assert time.monotonic() < deadline, "the agent never got there"
        time.sleep(0.05)
    worker = fleet.workers[victim].process
    assert worker is not None
    kill_tree(worker.pid)  # the machine is gone: daemon and agent alike
    worker.wait()
    return fleet, process, victim


def test_two_phases_run_in_order_and_merge(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.plan(PLAN)
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    summary = events[-1]
    assert summary["status"] == "done"
    assert pipeline.branch_file("sa/first", "first.txt") == "one\n"
    assert pipeline.branch_file("sa/second", "first.txt") == "one\n"  # built on first
    assert pipeline.branch_file("sa/second", "second.txt") == "two\n"
    merged = summary["merge_branch"]
    assert pipeline.branch_file(merged, "second.txt") == "two\n"
    assert [e["phase"] for e in events if e.get("event") == "phase_done"] == ["first", "second"]
    assert sorted(r["phase"] for r in pipeline.agent_runs() if r["event"] == "finish") == [
        "first",
        "second",
    ]


def test_a_worker_killed_mid_phase_has_its_phase_finished_elsewhere_once(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    _, process, victim = kill_a_worker_mid_phase(pipeline, tmp_path)  # never restarted
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    events = parse_events(out)
    done = [e for e in events if e.get("event") == "phase_done"]
    assert len(done) == 1 and done[0]["worker"] != victim
    assert any(e.get("event") == "worker_down" and e["worker"] == victim for e in events)
    finished = [r for r in pipeline.agent_runs() if r["event"] == "finish"]
    assert len(finished) == 1  # the killed run never finished; the phase was done once
    store = StateStore(pipeline.state)
    run = store.latest_run()
    assert run is not None
    attempts = store.attempts(run.id, "slow")
    assert [(a.worker, a.state) for a in attempts] == [
        (victim, "abandoned"),
        (done[0]["worker"], "done"),
    ]
    store.close()


def test_orchestrator_killed_mid_run_resumes_without_dispatching_twice(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan(
        {"first": {"delay_s": 1.5, **PLAN["first"]}, "second": {"delay_s": 0.5, **PLAN["second"]}}
    )
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    process = pipeline.start_dispatch(spec)
    wait_for_event(process, "dispatched")
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(2)  # the first phase finishes while no orchestrator is running
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    assert events[0]["resumed"] is True
    messages = inbox_messages(pipeline)
    keys = [m["key"] for m in messages]
    # one message per phase and one per check of the merge queue (the first phase may be
    # checked on the idle worker while the second runs), none sent twice
    checks = sorted(k for k in keys if k.startswith("integration/"))
    assert len(keys) == len(set(keys)) == 2 + len(checks) and 1 <= len(checks) <= 2
    # every phase and the last check done (a check of the first phase alone may have
    # given way to the whole run once both were done)
    finished = [m for m in messages if m["key"] not in checks[:-1]]
    assert all(m["state"] == "done" and m["acked_at"] for m in finished)
    finished = [r["phase"] for r in pipeline.agent_runs() if r["event"] == "finish"]
    assert sorted(finished) == ["first", "second"]


def test_a_phase_that_always_fails_ends_the_run_with_exit_1_and_its_reason(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan({"broken": {"files": {"out.txt": "wrong\n"}}})
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(
        tmp_path / "spec.json",
        [
            {
                "id": "broken",
                "title": "Broken",
                "task": "Write out.txt saying right; the agent always gets it wrong.",
                "deliverables": ["out.txt"],
                "verify": ["grep -qx right out.txt"],
            },
            {
                "id": "after",
                "title": "After",
                "task": "Never runs because the phase before it always fails.",
                "deliverables": ["after.txt"],
                "verify": ["test -f after.txt"],
                "depends_on": ["broken"],
            },
        ],
    )
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1
    summary = events[-1]
    assert summary["status"] == "failed"
    assert set(summary["dead"]) == {"broken"}
    assert "grep -qx right out.txt" in summary["dead"]["broken"]
    assert "attempt 2 of 2" in summary["dead"]["broken"]
    assert "blocked: after" in summary["reason"]
    runs = [r for r in pipeline.agent_runs() if r["event"] == "finish"]
    assert [r["phase"] for r in runs] == ["broken", "broken"]


def test_an_invalid_spec_is_refused_before_anything_is_dispatched(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.start_fleet(WorkerShape("w1"))
    phases = [dict(TWO_PHASES[0], depends_on=["second"]), TWO_PHASES[1]]
    spec = write_spec(tmp_path / "spec.json", phases)
    code, _, stderr = pipeline.dispatch(spec)
    assert code == 1
    assert "cycle" in stderr and stderr.count("\n") == 1
    assert inbox_messages(pipeline) == []
    assert not pipeline.state.exists() or (
        sqlite3.connect(pipeline.state).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    )


def test_a_worker_killed_then_restarted_after_its_phase_was_accepted_elsewhere(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Issue 9's scenario end to end, at its worst timing: the killed worker's machine
    cannot be reached, so the cancel owed to it waits; its phase is accepted elsewhere;
    it comes back while no orchestrator runs (stopped) and runs its written-off attempt
    to the end, pushing. The run finishes, and the phase's branch and the integration
    branch hold the accepted commit: each attempt pushes to its own ref, and only the
    orchestrator moves branches."""
    fleet, process, victim = kill_a_worker_mid_phase(pipeline, tmp_path)
    process.send_signal(signal.SIGKILL)  # before it could write the victim off
    process.wait()
    inbox = fleet.workers[victim].queue_db
    files = [inbox.with_name(inbox.name + tail) for tail in ("", "-wal", "-shm")]
    for path in files:  # the machine is unreachable: its inbox with it
        if path.exists():
            path.rename(path.with_name("away-" + path.name))
    process = pipeline.start_dispatch(tmp_path / "spec.json")  # resumed
    wait_for_event(process, "phase_done")
    process.send_signal(signal.SIGSTOP)  # nothing can cancel the stale attempt now
    try:
        for path in files:
            away = path.with_name("away-" + path.name)
            if away.exists():
                away.rename(path)
        fleet.start(victim)  # back, after its phase was accepted elsewhere
        store = StateStore(pipeline.state)
        run = store.latest_run()
        assert run is not None
        accepted = store.phases(run.id)["slow"].commit_sha
        stale_key = f"{run.id}/slow/1"
        store.close()
        deadline = time.monotonic() + 60
        with Queue(inbox, create=False) as queue:
            while (stale := message(queue, stale_key)).state != "done":
                assert time.monotonic() < deadline, f"the stale attempt never ran: {stale.state}"
                time.sleep(0.1)
        pushed = stale.response["commit"]
    finally:
        process.send_signal(signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    summary = parse_events(out)[-1]
    heads = subprocess.run(
        ["git", "-C", str(pipeline.remote), "rev-parse", "sa/slow", summary["merge_branch"],
         f"refs/superagent/attempts/{run.id}/slow/1"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert accepted and pushed != accepted
    assert heads[0] == accepted and heads[2] == pushed  # the stale push went to its own ref
    for commit, inside in ((accepted, True), (pushed, False)):
        found = subprocess.run(
            ["git", "-C", str(pipeline.remote), "merge-base", "--is-ancestor", commit, heads[1]]
        )
        assert (found.returncode == 0) is inside


def test_replayed_bytes_arrive_exactly_and_a_broken_phase_does_not_stop_the_others(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    crlf = b"@echo off\r\nset X=1\r\n"
    latin1 = "caf\u00e9 cr\u00e8me\n".encode("latin-1")
    recordings = tmp_path / "recordings"
    (recordings / "bytes" / "files").mkdir(parents=True)
    (recordings / "bytes" / "files" / "make.bat").write_bytes(crlf)
    (recordings / "bytes" / "files" / "menu.txt").write_bytes(latin1)
    (recordings / "other" / "files").mkdir(parents=True)
    (recordings / "other" / "files" / "other.txt").write_text("fine\n")
    # `broken` has no recording at all: its task cannot be built.
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    phase = {"title": "T", "task": "Replay it."}
    spec = write_spec(
        tmp_path / "spec.json",
        [
            {**phase, "id": "bytes", "deliverables": ["make.bat", "menu.txt"]},
            {**phase, "id": "broken", "deliverables": ["x.txt"]},
            {**phase, "id": "other", "deliverables": ["other.txt"]},
        ],
    )
    code, events, stderr = pipeline.dispatch(
        spec, "--agent", "replay", "--replay-dir", str(recordings)
    )
    assert code == 1, stderr  # the run fails: one phase is dead
    done = sorted(e["phase"] for e in events if e.get("event") == "phase_done")
    assert done == ["bytes", "other"]
    dead = [e for e in events if e.get("event") == "phase_dead"]
    assert [e["phase"] for e in dead] == ["broken"]
    assert "cannot build the task" in dead[0]["reason"]
    for name, data in (("make.bat", crlf), ("menu.txt", latin1)):
        blob = subprocess.run(
            ["git", "-C", str(pipeline.remote), "show", f"sa/bytes:{name}"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert blob == data
