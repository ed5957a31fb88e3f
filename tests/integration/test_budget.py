"""Budgets that hold: a run's spending stops at its budget, under concurrency, losses and lies.

The orchestrator's tick driven by hand (the test acts as the workers, see
test_orchestrator.Rig): real inboxes, a real state database, a real git remote. The
race is real too: processes reserving from one run's budget at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from control.budget import OverBudget, Spend, burn_pause_until, reserve
from control.cli import app
from control.events import read as read_events
from control.spec import load_spec
from control.state import StateStore
from tests.integration.test_orchestrator import Rig

ROOT = Path(__file__).resolve().parents[2]


def phases(*ids: str, cap: float | None = 4.0) -> list[dict[str, Any]]:
    out = []
    for phase_id in ids:
        phase: dict[str, Any] = {
            "id": phase_id,
            "title": phase_id,
            "task": f"Write {phase_id}.txt holding the word ready and nothing else.",
            "deliverables": [f"{phase_id}.txt"],
            "verify": [f"grep -qx ready {phase_id}.txt"],
        }
        if cap is not None:
            phase["budget_usd"] = cap
        out.append(phase)
    return out


def budget_rig(root: Path, ids: tuple[str, ...], budget: float, **top: Any) -> Rig:
    """A Rig whose run has `budget` and whose spec has the top-level fields `top`."""
    rig = Rig(root, phases(*ids))
    if top:
        document = json.loads(rig.spec_path.read_text())
        document.update(top)
        rig.spec_path.write_text(json.dumps(document))
        rig.spec = load_spec(rig.spec_path, rig.workers)
    rig.store.set_budget(rig.run_id, budget)
    rig.orchestrator = rig.new_orchestrator()
    return rig


@pytest.fixture
def three(tmp_path: Path) -> Any:
    rig = budget_rig(tmp_path, ("a", "b", "c"), 10.0)
    yield rig
    rig.close()


def finish(rig: Rig, phase_id: str, cost: Any) -> None:
    """The worker holding `phase_id` pushes its commit and answers done with `cost`."""
    attempt = [a for a in rig.store.attempts(rig.run_id, phase_id) if a.state == "dispatched"][-1]
    job = rig.queues[attempt.worker].claim(attempt.worker, 60)
    assert job is not None and job.key == attempt.key
    commit = rig.push(job.payload["push_ref"], {f"{phase_id}.txt": "ready\n"})
    agent = {} if cost is None else {"cost_usd": cost}
    rig.queues[attempt.worker].complete(
        job.id, job.fence, {"status": "done", "commit": commit, "agent": agent}
    )


def tick(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()


def dispatched(rig: Rig) -> list[str]:
    return sorted(a.phase_id for a in rig.store.attempts(rig.run_id))


def test_a_run_stops_at_its_budget_with_nothing_dispatched_past_it_and_resumes_raised(
    three: Rig,
) -> None:
    rig = three
    tick(rig)
    assert len(dispatched(rig)) == 2  # 4 + 4 reserved of 10: a third cap of 4 would pass it
    first, second = dispatched(rig)
    (waiting,) = {"a", "b", "c"} - {first, second}
    for attempt in rig.store.attempts(rig.run_id):
        job_agent = rig.orchestrator.build_task(attempt).agent
        assert job_agent["max_budget_usd"] == 4.0  # the agent's own cap is its reservation
    finish(rig, first, 3.5)
    tick(rig)  # 3.5 spent + 4 reserved: 2.5 left, the waiting phase needs 4
    assert dispatched(rig) == [first, second]
    assert "over budget" in (rig.store.phases(rig.run_id)[waiting].reason or "")
    assert rig.orchestrator.outcome() is None  # the phase in flight may still free money
    finish(rig, second, 3.5)
    tick(rig)
    outcome = rig.orchestrator.outcome()
    assert outcome is not None and outcome.status == "failed"
    assert outcome.reason and "stopped by its budget" in outcome.reason
    assert dispatched(rig) == [first, second]  # nothing past the budget
    assert rig.store.spending(rig.run_id)["spent"] == pytest.approx(7.0)
    assert rig.store.phases(rig.run_id)[waiting].state == "waiting"  # not dead: resumable
    kinds = [kind for kind, _ in rig.events]
    assert kinds.count("budget_stop") == 1

    rig.store.set_budget(rig.run_id, 20.0)  # `control dispatch --budget 20`
    rig.orchestrator = rig.new_orchestrator()
    tick(rig)
    assert dispatched(rig) == ["a", "b", "c"]
    assert rig.orchestrator.outcome() is None


def test_an_agent_that_overspends_its_cap_stops_every_dispatch_after_it(tmp_path: Path) -> None:
    rig = budget_rig(tmp_path, ("a", "b", "c"), 10.0)
    try:
        tick(rig)
        first, second = dispatched(rig)
        finish(rig, first, 9.0)  # a cap of 4, and it says it spent 9
        finish(rig, second, 0.5)
        tick(rig)
        assert len(dispatched(rig)) == 2
        outcome = rig.orchestrator.outcome()
        assert outcome is not None and "stopped by its budget" in (outcome.reason or "")
        assert rig.store.cost_by("worker", rig.run_id) == pytest.approx(
            {a.worker: a.cost_usd for a in rig.store.attempts(rig.run_id)}
        )
    finally:
        rig.close()


@pytest.mark.parametrize("cost", [-50.0, "3", True, None, {"usd": 1}])
def test_a_cost_that_is_no_cost_is_charged_the_whole_reservation(tmp_path: Path, cost: Any) -> None:
    """A hostile or silent worker cannot refund the budget: a negative, non-number or
    missing cost is charged as the reservation, marked estimated."""
    rig = budget_rig(tmp_path, ("a", "b", "c"), 10.0)
    try:
        tick(rig)
        first = dispatched(rig)[0]
        finish(rig, first, cost)
        tick(rig)
        spending = rig.store.spending(rig.run_id)
        assert spending["spent"] == pytest.approx(4.0)
        assert spending["estimated"] == pytest.approx(4.0)
        assert len(dispatched(rig)) == 2  # 4 charged + 4 reserved: still no room for 4
    finally:
        rig.close()


def test_a_lost_attempt_keeps_its_reservation_until_its_real_cost_arrives(tmp_path: Path) -> None:
    rig = budget_rig(tmp_path, ("a",), 6.0)
    try:
        tick(rig)
        (attempt,) = rig.store.attempts(rig.run_id)
        job = rig.queues[attempt.worker].claim(attempt.worker, 600)
        assert job is not None
        other = "w2" if attempt.worker == "w1" else "w1"
        rig.clock.advance(31)  # its worker goes silent mid-phase, having spent who knows what
        rig.beat(other)
        rig.orchestrator.tick()
        lost = rig.store.attempts(rig.run_id)[0]
        assert lost.state == "abandoned" and lost.cost_estimated and lost.cost_usd == 4.0
        assert len(rig.store.attempts(rig.run_id)) == 1  # 2 left, a retry needs 4
        outcome = rig.orchestrator.outcome()
        assert outcome is not None and "stopped by its budget" in (outcome.reason or "")
        # The lost worker comes back and answers late with what it really spent.
        commit = rig.push(job.payload["push_ref"], {"a.txt": "ready\n"})
        rig.queues[attempt.worker].complete(
            job.id, job.fence, {"status": "done", "commit": commit, "agent": {"cost_usd": 1.0}}
        )
        rig.clock.advance(1)
        tick(rig)
        assert rig.store.attempts(rig.run_id)[0].cost_usd == 1.0
        assert len(rig.store.attempts(rig.run_id)) == 2  # 5 left: the retry fits
    finally:
        rig.close()


def test_the_burn_rate_alarm_pauses_dispatching_and_says_so(tmp_path: Path) -> None:
    rig = budget_rig(tmp_path, ("a", "b", "c"), 100.0, burn_rate_usd_per_hour=5.0)
    try:
        tick(rig)
        first = dispatched(rig)[0]
        finish(rig, first, 6.0)  # $6 in an hour: over the $5/h alarm
        tick(rig)
        assert len(dispatched(rig)) == 2
        alarms = [data for kind, data in rig.events if kind == "budget_alarm"]
        assert len(alarms) == 1 and "$6.00" in alarms[0]["reason"]
        stored = [e.kind for e in read_events(rig.store.conn, run_id=rig.run_id, limit=-1)]
        assert "budget_alarm" in stored
        rig.clock.advance(1800)
        tick(rig)
        assert len(dispatched(rig)) == 2  # still within the hour
        rig.clock.advance(1801)
        tick(rig)  # (the phase in flight meanwhile overran its timeout and was resent too)
        assert set(dispatched(rig)) == {"a", "b", "c"}
        assert "budget_resumed" in [
            e.kind for e in read_events(rig.store.conn, run_id=rig.run_id, limit=-1)
        ]
    finally:
        rig.close()


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from control.budget import OverBudget
    from control.state import StateStore
    db, run, phase, go = sys.argv[1:5]
    store = StateStore(Path(db))
    while not Path(go).exists():
        time.sleep(0.001)
    try:
        store.record_sending(run, phase, "w1", cap_usd=3.0)
        print("got")
    except OverBudget:
        print("refused")
    """
)


def test_concurrent_dispatches_never_reserve_more_than_the_budget(tmp_path: Path) -> None:
    """Eight processes race to dispatch one phase each (cap $3) from a $10 budget: three
    get it, in one transaction each, and the reservations never pass the budget."""
    path = tmp_path / "state.db"
    store = StateStore(path)
    ids = [f"p{i}" for i in range(8)]
    run_id = store.create_run("spec", "h", {}, [(p, f"sa/{p}") for p in ids], budget_usd=10.0)
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path), run_id, p, str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in ids
    ]
    go.touch()
    said = [r.communicate(timeout=60)[0].strip() for r in racers]
    assert sorted(said) == ["got"] * 3 + ["refused"] * 5
    spending = store.spending(run_id)
    assert spending["reserved"] == pytest.approx(9.0)
    store.close()


def test_reserve_refuses_what_does_not_fit_and_gives_an_uncapped_phase_the_rest() -> None:
    assert reserve(None, 100.0, 4.0, "p") == 4.0
    assert reserve(None, 0.0, None, "p") == 0.0
    assert reserve(10.0, 6.0, 4.0, "p") == 4.0
    assert reserve(10.0, 6.5, None, "p") == pytest.approx(3.5)
    with pytest.raises(OverBudget, match=r"phase p needs \$4.00 but only \$3.50"):
        reserve(10.0, 6.5, 4.0, "phase p")
    with pytest.raises(OverBudget):
        reserve(10.0, 10.0, None, "p")


def test_burn_pause_lasts_until_the_oldest_costs_age_out() -> None:
    spends = [Spend(1000.0, 3.0), Spend(2000.0, 3.0), Spend(2500.0, 1.0)]
    assert burn_pause_until(spends, 2600.0, 10.0) is None
    assert burn_pause_until(spends, 2600.0, 5.0) == 1000.0 + 3600
    assert burn_pause_until(spends, 2600.0, 0.5) == 2500.0 + 3600


def test_set_budget_refuses_nothing_and_a_missing_run(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        with pytest.raises(Exception, match="more than"):
            store.set_budget("r1", 0)
        with pytest.raises(Exception, match="no run 'r1'"):
            store.set_budget("r1", 5.0)
    finally:
        store.close()


def test_status_shows_the_runs_money_per_worker(three: Rig) -> None:
    rig = three
    tick(rig)
    first = dispatched(rig)[0]
    finish(rig, first, 2.25)
    tick(rig)
    worker = rig.store.attempts(rig.run_id, first)[0].worker
    result = CliRunner().invoke(app, ["status", "--state", str(rig.store.path), "--json"])
    assert result.exit_code == 0, result.output
    money = json.loads(result.stdout)["money"]
    assert money["budget_usd"] == 10.0 and money["spent_usd"] == 2.25
    assert money["reserved_usd"] == 4.0 and money["by_worker"] == {worker: 2.25}
    text = CliRunner().invoke(app, ["status", "--state", str(rig.store.path)])
    assert "cost $2.25 of $10.00, $4.00 reserved in flight" in text.stdout


def test_plan_forecasts_cost_from_history_then_estimates_then_caps(tmp_path: Path) -> None:
    document = {
        "version": 1,
        "name": "forecast",
        "repo": {"url": "git@example.invalid:x.git"},
        "defaults": {"verify": ["true"], "max_attempts": 2},
        "phases": [
            {**phases("seen")[0], "budget_usd": 5.0, "estimate_usd": 3.0},
            {**phases("new")[0], "budget_usd": 4.0, "estimate_usd": 1.5},
            {**phases("capped")[0], "budget_usd": 2.0},
            {k: v for k, v in phases("open")[0].items() if k != "budget_usd"},
        ],
    }
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(document))
    store = StateStore(tmp_path / "state.db")
    for cost in (1.0, 2.0):  # two past runs in which `seen` was done
        run_id = store.create_run(str(spec.resolve()), "h", {}, [("seen", "sa/seen")])
        attempt = store.record_sending(run_id, "seen", "w1")
        store.settle_attempt(attempt, attempt_state="done", phase_state="done", reason=None,
                             cost_usd=cost, event="phase_done")  # fmt: skip
    store.close()
    result = CliRunner().invoke(
        app, ["plan", str(spec), "--state", str(tmp_path / "state.db"), "--json"]
    )
    assert result.exit_code == 0, result.output
    cost = json.loads(result.stdout)["cost"]
    assert cost["sources"] == {
        "seen": "history", "new": "estimate", "capped": "cap", "open": "unknown",
    }  # fmt: skip
    assert cost["expected_usd"] == pytest.approx(1.5 + 1.5 + 2.0)
    assert cost["at_most_usd"] is None  # `open` has no cap
    text = CliRunner().invoke(app, ["plan", str(spec), "--state", str(tmp_path / "none.db")])
    assert "expected cost: $6.50 (1 from cap, 2 from estimate, 1 from unknown)" in text.stdout
