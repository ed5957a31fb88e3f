"""The merge queue's decisions (control/merge_queue.py) from the rows a state database
holds, and its reopen of a done phase in a real SQLite database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from control.dag import Dag
from control.events import read
from control.merge import MergeFailed
from control.merge_queue import Next, plan, reopen, superseded
from control.messages import IntegrationResult
from control.recovery import continuation
from control.resolution import conflict_of
from control.state import IntegrationRow, StateStore

ORDER = ("a", "b", "c", "d")
DAG = Dag({"a": (), "b": (), "c": ("b",), "d": ()})
COMMITS = {p: p * 40 for p in ORDER}


def check(
    n: int, phases: tuple[str, ...], state: str, *, commits: dict[str, str] = COMMITS
) -> IntegrationRow:
    """A check of `phases` that passed (`done`), failed its verify commands (`failed`) or
    did not finish (`retry`)."""
    response: dict[str, Any] = {"status": "done", "commit": f"{n:040x}"}
    if state == "failed":
        response = {"status": "failed", "failed_phases": [phases[-1]], "reason": "boom",
                    "checks": [{"command": "make test", "phases": [phases[-1]], "exit_code": 1,
                                "output_tail": "E boom", "duration_s": 1.0,
                                "timed_out": False}]}  # fmt: skip
    if state == "retry":
        response = {"status": "failed", "reason": "the worker stopped"}
    body = {"type": "integration_result", "version": 1, "run_id": "r1", "attempt": n,
            "branch": "sa/integration/r1", **response}  # fmt: skip
    return IntegrationRow(
        run_id="r1", attempt=n, key=f"integration/r1/{n}", worker="w1",
        state="done" if state == "done" else "failed", created_at=float(n), finished_at=None,
        reason=None, response={"state": "done", "response": body}, late_response=None,
        task={"type": "integration",
              "phases": [{"phase": p, "branch": f"sa/{p}", "commit": commits[p]} for p in phases]},
    )  # fmt: skip


def test_the_first_check_holds_every_done_phase_whose_prerequisites_are_in() -> None:
    assert plan(DAG, COMMITS, []) == Next(check=ORDER)
    # c's prerequisite b is not done: c waits out of the batch
    done = {p: COMMITS[p] for p in ("a", "c", "d")}
    assert plan(DAG, done, []) == Next(check=("a", "d"))
    # a verified state holding everything: nothing left to check
    assert plan(DAG, COMMITS, [check(1, ORDER, "done")]) == Next()


def test_a_failing_batch_is_bisected_by_dependency_closed_halves_down_to_its_culprit() -> None:
    rows = [check(1, ORDER, "failed")]
    assert plan(DAG, COMMITS, rows) == Next(check=("a", "b"), bisecting=True)
    rows.append(check(2, ("a", "b"), "done"))  # the culprit is in c, d
    assert plan(DAG, COMMITS, rows) == Next(check=("a", "b", "c"), bisecting=True)
    rows.append(check(3, ("a", "b", "c"), "retry"))  # a worker that did not finish: again
    assert plan(DAG, COMMITS, rows).check == ("a", "b", "c")
    rows.append(check(4, ("a", "b", "c"), "failed"))
    found = plan(DAG, COMMITS, rows)
    assert found.culprit == "c" and found.failure is rows[-1] and not found.check
    # had {a, b, c} passed, d alone is left: the culprit, with no check of its own
    passed = [*rows[:3], check(4, ("a", "b", "c"), "done")]
    assert plan(DAG, COMMITS, passed).culprit == "d"
    # had {a, b} failed: its first half next
    first = [rows[0], check(2, ("a", "b"), "failed")]
    assert plan(DAG, COMMITS, first) == Next(check=("a",), bisecting=True)


def test_checks_of_a_commit_since_redone_no_longer_count() -> None:
    rows = [check(1, ("a", "b"), "done"), check(2, ORDER, "failed"),
            check(3, ("a", "b", "c"), "failed")]  # fmt: skip
    assert plan(DAG, COMMITS, rows).culprit == "c"
    redone = {**COMMITS, "c": "e" * 40}
    assert plan(DAG, redone, rows) == Next(check=ORDER)  # the batch onto {a, b}
    moved = {**COMMITS, "a": "f" * 40}  # the verified state itself is gone
    assert plan(DAG, moved, rows) == Next(check=ORDER)


def test_a_check_of_part_of_the_run_gives_way_once_every_phase_is_done() -> None:
    part = check(5, ("a", "b"), "done")
    part = IntegrationRow(**{**vars(part), "state": "dispatched", "response": None})
    some = {p: COMMITS[p] for p in ("a", "b", "c")}
    assert not superseded(DAG, some, [part], part)  # d still runs: the part goes on
    assert superseded(DAG, COMMITS, [part], part)  # all done: the whole run instead
    # a bisection's check of part of the run is what is wanted: it goes on
    bisecting = [check(1, ORDER, "failed"), part]
    assert not superseded(DAG, COMMITS, bisecting, part)
    whole = IntegrationRow(**{**vars(check(2, ORDER, "done")), "state": "dispatched"})
    assert not superseded(DAG, COMMITS, [whole], whole)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.db")


def done_run(store: StateStore) -> str:
    run_id = store.create_run("spec.json", "h", {}, [(p, f"sa/{p}") for p in ORDER])
    for phase in ORDER:
        attempt = store.record_sending(run_id, phase, "w1")
        store.settle_attempt(
            attempt, attempt_state="done", phase_state="done", reason=None,
            commit=COMMITS[phase], event="phase_done",
        )  # fmt: skip
    return run_id


def test_a_reopen_sends_the_culprit_and_its_dependents_back_once(store: StateStore) -> None:
    run_id = done_run(store)
    failure = check(4, ("a", "b", "c"), "failed")
    step = Next(culprit="b", failure=failure)
    reopened = reopen(store, run_id, step, DAG, rounds=2)
    assert reopened.phases == ("b", "c")
    assert "merged with a, c" in reopened.reason and "boom" in reopened.reason
    phases = store.phases(run_id)
    assert {p: r.state for p, r in phases.items()} == {
        "a": "done", "b": "waiting", "c": "waiting", "d": "done"
    }  # fmt: skip
    assert phases["b"].failures == 0
    # a repeat (a killed orchestrator doing it again) changes nothing
    assert store.reopen_phases(run_id, "b", failure.key, {"b": (1, {"reason": "x"})}) == []
    events = [e for e in read(store.conn, run_id=run_id) if e.kind == "phase_reopened"]
    assert [(e.phase_id, e.detail["culprit"]) for e in events] == [("b", "b"), ("c", "b")]
    # the next attempt is shown the failing command and its output, from the base
    rows = store.reopens(run_id, "b")
    after = continuation(store.attempts(run_id, "b"), 2, 2, rows)
    assert after.feedback is not None and after.resume_refs == ()
    assert after.feedback.verify[0].command == "make test"
    assert after.feedback.verify[0].output_tail == "E boom"
    # a failed attempt after the reopen gives its own feedback, as any failure does
    told = continuation(store.attempts(run_id, "c"), 2, 2, store.reopens(run_id, "c"))
    assert told.feedback is not None and "prerequisite 'b'" in told.feedback.reason


def test_a_phase_breaking_the_integration_past_its_rounds_ends_the_run(store: StateStore) -> None:
    run_id = done_run(store)
    step = Next(culprit="d", failure=check(4, ORDER, "failed"))
    broke = r"'d' passes its own verify.*broke the integration 1 times"
    with pytest.raises(MergeFailed, match=broke):
        reopen(store, run_id, step, DAG, rounds=0)
    assert store.phases(run_id)["d"].state == "done"  # nothing half-done


def test_a_final_checks_conflict_is_read_through_its_typed_answer() -> None:
    conflict = {"phase": "c", "branch": "sa/c", "commit": "c" * 40, "files": ["api.py"]}
    answered = IntegrationResult(status="conflict", run_id="r1", attempt=1,
                                 branch="sa/integration/r1", conflict=conflict)  # fmt: skip

    def row(body: Any, task: Any = None) -> IntegrationRow:
        built = check(1, ORDER, "retry")
        return replace(built, response={"state": "failed", "response": body},
                       task=built.task if task is None else task)  # fmt: skip

    assert conflict_of(row(answered.to_dict())) == conflict
    assert row(answered.to_dict()).answer() == answered
    # Not a conflict, not an integration result, another version, a resolution's answer.
    assert conflict_of(row(replace(answered, status="failed").to_dict())) is None
    assert conflict_of(row({"status": "conflict", "conflict": conflict})) is None
    assert conflict_of(row(answered.to_dict() | {"version": 2})) is None
    assert conflict_of(row(answered.to_dict(), task={"type": "phase"})) is None
    assert row(None).answer() is None
