"""The event stream is the single source: what the orchestrator says is in the state
database exactly once, and `control events` reads (and follows) it.

Real inboxes, state database and git remote (the orchestrator Rig); the CLI runs as
a real `control events` subprocess where following is tested.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from control import events
from control.cli import app
from tests.integration.test_orchestrator import TWO_INDEPENDENT, Rig, claim

ROOT = Path(__file__).resolve().parents[2]


def sources(*names: str) -> list[Path]:
    """The orchestrator's modules (control/orchestrator/), then the named ones."""
    return [*sorted((ROOT / "control" / "orchestrator").glob("*.py")),
            *(ROOT / "control" / name for name in names)]  # fmt: skip


def said_kinds() -> set[str]:
    """Every kind the orchestrator and the run driver say, read from their source."""
    found: set[str] = set()
    for path in sources("driver.py", "integration.py"):
        text = path.read_text()
        for first in re.findall(r"\b_?say\(\s*([^,)]+)", text):  # "a" if x else "b" too
            found |= set(re.findall(r"\"(\w+)\"", first))
        for said in re.findall(r"\b_settle\([^)]*?\bevent=([^,\n]+)", text):  # says its event
            found |= set(re.findall(r"\"(\w+)\"", said))
    return found


def written_kinds() -> set[str]:
    """Every kind the state database writes with a change, read from the source."""
    state = "\n".join(p.read_text() for p in sorted((ROOT / "control" / "state").glob("*.py")))
    found = set(re.findall(r"_event\(\s*conn,\s*[\w.]+,\s*f?\"(\w+)\"", state))
    found |= set(re.findall(r"event: str = \"(\w+)\"", state))  # a hold's default kinds
    for path in sources("driver.py"):
        text = path.read_text()
        for kind in re.findall(r"\bevent=([^,\n]+)", text):  # "a" if x else "b" too
            found |= set(re.findall(r"\"(\w+)\"", kind))
        found |= set(re.findall(r"store\.event\(\s*[\w.]+,\s*\"(\w+)\"", text))
    return found


def test_every_kind_written_is_in_the_schema_with_its_writer() -> None:
    kinds = written_kinds()
    assert {"run_created", "phase_dead", "rate_limit_hold", "run_resumed"} <= kinds
    assert kinds - set(events.KINDS) == set()
    assert {k for k in kinds if events.written_by(k) != "state"} == set()
    assert {f"run_{s}" for s in ("done", "failed", "cancelled")} <= set(events.KINDS)


def test_every_kind_the_orchestrator_says_is_in_the_schema() -> None:
    kinds = said_kinds()
    assert {"worker_down", "worker_up", "phase_dead", "phase_stuck", "alert_pending"} <= kinds
    assert {"integration_retry", "worker_drained", "worker_undrained"} <= kinds
    assert kinds - set(events.KINDS) == set()


def stored(rig: Rig) -> list[events.Event]:
    return events.read(rig.store.conn, run_id=rig.run_id, limit=-1)


def test_what_the_orchestrator_says_is_stored_exactly_once(tmp_path: Path) -> None:
    rig = Rig(tmp_path, TWO_INDEPENDENT)
    try:
        rig.orchestrator.settings.max_concurrent = 1
        rig.orchestrator.settings.pending_alert_s = 100
        rig.beat("w1", "w2")
        rig.orchestrator.tick()
        (first,) = [a for a in rig.store.attempts(rig.run_id)]
        job = claim(rig, first.worker)
        reset = rig.clock() + 50
        rig.queues[first.worker].fail(
            job.id, job.fence, "usage limit", {"status": "rate_limited", "rate_limit_reset": reset}
        )
        rig.beat("w1", "w2")
        rig.orchestrator.tick()  # rate limited: held
        rig.clock.advance(51)
        rig.beat("w1", "w2")
        rig.orchestrator.tick()  # resumed
        other = "w2" if first.worker == "w1" else "w1"
        rig.clock.advance(31)  # first.worker goes silent: down
        rig.beat(other)
        rig.orchestrator.tick()
        rig.clock.advance(120)  # nobody claims: pending past the alert threshold
        rig.beat("w1", "w2")  # and the silent one is back
        rig.orchestrator.tick()
        said = Counter(kind for kind, _ in rig.events)
        kept = Counter(e.kind for e in stored(rig))
        for kind in (
            "rate_limited", "rate_limit_hold", "rate_limit_resumed", "worker_down",
            "worker_up", "phase_lost", "dispatched", "alert_pending",
        ):  # fmt: skip
            assert kept[kind] >= 1, f"{kind} never stored ({dict(kept)})"
        for kind, count in said.items():
            if events.written_by(kind) == "orchestrator":
                assert kept[kind] == count, kind
            else:
                assert kept[kind] >= count, kind
        # nothing is stored twice: every (kind, phase, worker, detail) row differs in time
        rows = [(e.kind, e.phase_id, e.worker, json.dumps(e.detail), e.at) for e in stored(rig)]
        assert len(rows) == len(set(rows))
        down = next(e for e in stored(rig) if e.kind == "worker_down")
        assert down.worker == first.worker and "no heartbeat" in down.detail["reason"]
        assert down.to_dict()["v"] == events.SCHEMA_VERSION
    finally:
        rig.close()


def test_control_events_prints_all_runs_or_one_as_json_lines(tmp_path: Path) -> None:
    rig = Rig(tmp_path, TWO_INDEPENDENT)
    try:
        rig.beat("w1", "w2")
        rig.orchestrator.tick()
        rig.store.event(None, "worker_up", worker="w9")  # a fleet event, no run
        state = str(rig.store.path)
        runner = CliRunner()
        every = runner.invoke(app, ["events", "--state", state, "--json"])
        assert every.exit_code == 0, every.output
        lines = [json.loads(x) for x in every.output.splitlines()]
        assert [x["id"] for x in lines] == sorted(x["id"] for x in lines)
        assert {"run_created", "sending", "dispatched", "worker_up"} <= {x["kind"] for x in lines}
        assert all(x["v"] == events.SCHEMA_VERSION for x in lines)
        one = runner.invoke(app, ["events", "--state", state, "--json", "--run", rig.run_id])
        assert "w9" not in one.output and "dispatched" in one.output
        after = runner.invoke(
            app, ["events", "--state", state, "--json", "--after", str(lines[-2]["id"])]
        )
        assert [json.loads(x)["id"] for x in after.output.splitlines()] == [lines[-1]["id"]]
        text = runner.invoke(app, ["events", "--state", state])
        assert "dispatched run=" in text.output
    finally:
        rig.close()


def test_control_events_refuses_an_unknown_run_and_a_missing_database(tmp_path: Path) -> None:
    rig = Rig(tmp_path, TWO_INDEPENDENT)
    rig.close()
    runner = CliRunner()
    bad = runner.invoke(app, ["events", "--state", str(rig.store.path), "--run", "nope"])
    assert bad.exit_code == 3 and "no run 'nope'" in bad.output
    gone = runner.invoke(app, ["events", "--state", str(tmp_path / "none.db")])
    assert gone.exit_code == 3 and "no state database" in gone.output


def test_agent_text_in_an_event_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    rig = Rig(tmp_path, TWO_INDEPENDENT)
    try:
        rig.store.event(rig.run_id, "phase_stuck", "left", None, {"reason": "x\x1b]0;pwn\x07y"})
        out = CliRunner().invoke(app, ["events", "--state", str(rig.store.path)]).output
        assert "\x1b" not in out and "\\u001b]0;pwn" in out
    finally:
        rig.close()


def test_control_events_follow_prints_new_events_as_they_are_written(tmp_path: Path) -> None:
    rig = Rig(tmp_path, TWO_INDEPENDENT)
    follower = subprocess.Popen(
        [sys.executable, "-m", "control", "events", "--follow", "--json", "--state",
         str(rig.store.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        first: dict[str, Any] = json.loads(follower.stdout.readline())
        assert first["kind"] == "run_created"
        time.sleep(0.3)
        rig.store.event(None, "worker_down", worker="w1", detail={"reason": "gone"})
        later = json.loads(follower.stdout.readline())
        assert (later["kind"], later["worker"], later["detail"]) == (
            "worker_down", "w1", {"reason": "gone"},
        )  # fmt: skip
    finally:
        follower.kill()
        follower.wait()
        follower.stdout.close() if follower.stdout else None
        rig.close()


def test_docs_list_every_kind_with_its_writer() -> None:
    text = (ROOT / "docs" / "events.md").read_text()
    for kind, spec in events.KINDS.items():
        assert f"| `{kind}` | {spec.writer} |" in text, kind
