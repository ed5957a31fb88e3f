"""An operator's retry and cancel (control/state/interventions.py) each check their rule and
change the phases in one write transaction: another writer of the state database (the
orchestrator settling a late answer) cannot slip in between the check and the change."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control.errors import ConflictError
from control.state import PhaseRow, StateStore
from tests.conftest import Clock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore(tmp_path / "state.db", clock=Clock())
    yield opened
    opened.close()


def a_run(store: StateStore, states: dict[str, str], status: str = "running") -> str:
    run_id = store.create_run("spec.json", "h", {}, [(p, f"sa/{p}") for p in states])
    with store.write() as conn:
        for phase, state in states.items():
            conn.execute(
                "UPDATE phases SET state = ? WHERE run_id = ? AND phase_id = ?",
                (state, run_id, phase),
            )
    if status != "running":
        store.finish_run(run_id, status, "it ended")
    return run_id


def meddle_after_reading(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, sql: str, *args: object
) -> list[str]:
    """Once the store has read the phases (the check), another connection to the same
    file tries `sql` at once; what happened to it is appended to the list returned."""
    other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
    read: Callable[[str], dict[str, PhaseRow]] = store.phases
    happened: list[str] = []

    def phases_then_meddle(run_id: str) -> dict[str, PhaseRow]:
        rows = read(run_id)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute(sql, args)
            other.execute("COMMIT")
            happened.append("written")
        except sqlite3.OperationalError as exc:
            happened.append(str(exc))
        return rows

    monkeypatch.setattr(store, "phases", phases_then_meddle)
    return happened


def state_of(store: StateStore, run_id: str) -> dict[str, str]:
    return {p: r.state for p, r in StateStore.phases(store, run_id).items()}


def test_nothing_changes_a_phase_between_the_retry_rule_and_the_reset(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run(store, {"api": "dead", "web": "done"}, status="failed")
    # The orchestrator settles a late answer of api's last attempt in between: done.
    happened = meddle_after_reading(
        store, monkeypatch, "UPDATE phases SET state = 'done' WHERE phase_id = 'api'"
    )
    store.retry_phases(run_id, ["api"], "retry requested")
    assert happened == ["database is locked"]  # blocked: it waits for the retry to commit
    assert state_of(store, run_id) == {"api": "waiting", "web": "done"}
    assert store.run(run_id).status == "running"  # reopened in the same transaction


def test_a_refused_retry_changes_nothing(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run(store, {"api": "dead", "web": "waiting"}, status="failed")
    with pytest.raises(
        ConflictError, match="only dead or cancelled phases can be retried: web is waiting"
    ):
        store.retry_phases(run_id, ["api", "web"], "retry requested")
    assert state_of(store, run_id) == {"api": "dead", "web": "waiting"}
    assert store.run(run_id).status == "failed"


def test_a_cancel_picks_and_cancels_its_phases_and_ends_the_run_in_one_transaction(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run(store, {"api": "waiting", "web": "done", "cli": "dead"})
    happened = meddle_after_reading(
        store, monkeypatch, "UPDATE phases SET state = 'done' WHERE phase_id = 'api'"
    )
    phases, owed = store.cancel_phases(run_id, None, "cancelled by the operator")
    assert happened == ["database is locked"]
    assert (sorted(phases), owed) == (["api", "cli"], [])
    assert state_of(store, run_id) == {"api": "cancelled", "web": "done", "cli": "cancelled"}
    assert store.run(run_id).status == "cancelled"


def test_a_cancel_of_named_phases_checks_the_names_in_its_transaction(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run(store, {"api": "waiting", "web": "waiting"})
    happened = meddle_after_reading(
        store, monkeypatch, "UPDATE phases SET state = 'dead' WHERE phase_id = 'api'"
    )
    phases, _ = store.cancel_phases(run_id, ["api"], "cancelled by the operator")
    assert (happened, phases) == (["database is locked"], ["api"])
    assert state_of(store, run_id) == {"api": "cancelled", "web": "waiting"}
    assert store.run(run_id).status == "running"  # only named phases: the run goes on
