"""Retention: `control gc` and the automatic policy keep a year of history small and
fast, with a summary of every pruned run; a running run is never touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from control.driver import retention_days
from control.errors import UsageError
from control.events import read as read_events
from control.messages import wip_ref
from control.state import StateStore
from tests.conftest import Clock
from tests.unit.test_git import Upstream, git

DAY = 86400.0


def a_run(store: StateStore, clock: Clock, *, status: str, cost: float = 0.5) -> str:
    run_id = store.create_run("spec.json", "h", {"name": "x"}, [("a", "sa/a"), ("b", "sa/b")])
    attempt = store.record_sending(run_id, "a", "w1")
    store.record_dispatched(attempt, 1, False)
    store.settle_attempt(
        attempt,
        attempt_state="done",
        phase_state="done",
        reason=None,
        commit="c" * 40,
        cost_usd=cost,
        event="phase_done",
    )
    if status != "running":
        store.finish_run(run_id, status, None)
    return run_id


def test_gc_prunes_old_finished_runs_to_a_summary_and_keeps_the_rest(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock=clock)
    old = a_run(store, clock, status="done")
    still_running = a_run(store, clock, status="running")
    store.record_freeform("freeform/old", "w1")
    store.store_freeform_response("freeform/old", 7, {"response": {"summary": "hi"}})
    clock.advance(200 * DAY)
    recent = a_run(store, clock, status="failed")
    pruned = store.gc(180)
    assert (pruned.runs, pruned.answers) == (1, 1)
    assert pruned.events >= 3
    assert (
        store.phases(old) == {}
        and store.attempts(old) == []
        and read_events(store.conn, run_id=old, limit=-1) == []
    )
    summary = store.run(old).summary
    assert summary == {"phases": {"done": 1, "waiting": 1}, "attempts": 1, "cost_usd": 0.5}
    assert store.run(old).status == "done"
    for kept in (still_running, recent):
        assert store.run(kept).summary is None
        assert len(store.phases(kept)) == 2 and read_events(store.conn, run_id=kept, limit=-1)
    assert store.gc(180).runs == 0  # idempotent
    with pytest.raises(UsageError, match="older_than_days"):
        store.gc(-1)
    store.close()


def test_control_gc_and_the_automatic_policy_setting(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock=clock)
    a_run(store, clock, status="done")
    store.close()
    # The run was made on the test's clock (2023): real time makes it old enough.
    result = subprocess.run(
        [sys.executable, "-m", "control", "gc", "--older-than", "30", "--state",
         str(tmp_path / "state.db"), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["runs"] == 1


def test_the_retention_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERAGENT_RETENTION_DAYS", "a year")
    with pytest.raises(UsageError, match="SUPERAGENT_RETENTION_DAYS must be a number"):
        retention_days()
    monkeypatch.setenv("SUPERAGENT_RETENTION_DAYS", "-3")
    with pytest.raises(UsageError, match=">= 0"):
        retention_days()
    monkeypatch.setenv("SUPERAGENT_RETENTION_DAYS", "0")
    assert retention_days() == 0
    monkeypatch.delenv("SUPERAGENT_RETENTION_DAYS")
    assert retention_days() == 180


def test_control_gc_deletes_the_checkpoints_of_finished_runs_only(tmp_path: Path) -> None:
    """On a real bare remote: the checkpoints of a done and a cancelled run go; those of
    a running run, of a failed run a retry may resume, and of a run this database does
    not know (another orchestrator's) stay. A remote that is gone fails the command,
    once the rest is done."""
    upstream = Upstream(tmp_path / "git")
    gone = str(tmp_path / "gone.git")
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock=clock)

    def run_on(url: str, status: str) -> str:
        spec = {"name": "x", "repo": {"url": url}}
        run_id = store.create_run("spec.json", "h", spec, [("a", "sa/a")])
        if status != "running":
            store.finish_run(run_id, status, None)
        return run_id

    runs = {s: run_on(upstream.url, s) for s in ("done", "cancelled", "running", "failed")}
    elsewhere = run_on(gone, "done")
    store.close()
    kinds = [*runs.values(), "someone-elses-run"]
    for run_id in kinds:
        for ref in (wip_ref(run_id, "a", 1), wip_ref(run_id, "a", 2)):
            git(upstream.dev, "push", "--quiet", upstream.url, f"HEAD:{ref}")

    def checkpoints() -> set[str]:
        out = git(upstream.path, "for-each-ref", "--format=%(refname)", "refs/superagent/")
        return set(out.splitlines())

    assert len(checkpoints()) == 10

    def gc(days: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "control", "gc", "--state", str(tmp_path / "state.db"),
             "--older-than", days, "--json"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    result = gc("100000")  # the runs, made on the test's clock (2023), are not pruned
    assert result.returncode == 5, result.stderr  # the gone remote: unavailable
    assert "gone.git" in result.stderr and "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["checkpoints_deleted"]) == sorted([runs["done"], runs["cancelled"]])
    assert list(report["checkpoints_failed"]) == [gone]
    assert elsewhere not in report["checkpoints_deleted"]
    kept = {run_id for run_id in kinds if wip_ref(run_id, "a", 1) in checkpoints()}
    assert kept == {runs["running"], runs["failed"], "someone-elses-run"}
    assert len(checkpoints()) == 6
    # once pruned past retention, the failed run can no longer be retried: its go too
    assert list(json.loads(gc("30").stdout)["checkpoints_deleted"]) == [runs["failed"]]
    assert len(checkpoints()) == 4


def test_the_open_runs_are_found_without_reading_the_finished_ones(tmp_path: Path) -> None:
    """A year of finished runs stays out of what every health check and tick asks: the
    open runs, and the hosts and accounts with attempts in flight in them."""
    store = StateStore(tmp_path / "state.db")
    plans = {
        "open runs": "SELECT * FROM runs WHERE status = 'running' ORDER BY created_at, id",
        "hosts in flight": "SELECT a.worker FROM attempts a JOIN runs r ON r.id = a.run_id "
        "WHERE a.state IN ('sending', 'dispatched') AND r.status = 'running'",
    }
    for what, sql in plans.items():
        plan = [row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        assert any("USING INDEX runs_running" in step for step in plan), (what, plan)
    store.close()
