"""A phase goes only to a worker that can run its agent: the CLI its heartbeat reports
installed (and, for Claude Code on the worker's own credential, a credential); with none,
the phase waits saying what each host lacks, and uses none of its attempts.

The orchestrator's tick driven by hand (test_orchestrator.Rig: real inboxes, state
database and git remote); the test beats as the workers, with the versions a real worker's
check reports (`control.worker.checks`: a version, or None when the CLI is not found).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from control.accounts import Account, offers, pick
from control.localfleet import WorkerShape
from control.pins import load
from control.queue import Queue
from tests.integration.conftest import FAKES, Pipeline, parse_events, write_spec
from tests.integration.test_accounts import AccountRig, phase
from tests.integration.test_fleet_commands import control

PINS = load()
WITH_CODEX = {"claude_code": None, "codex": PINS["agents"]["codex"]["version"], "gemini": None,
              "opencode": None}  # fmt: skip
NO_CODEX = {"claude_code": PINS["claude_code"]["version"],
            "claude_auth": "environment (ANTHROPIC_API_KEY)",
            "codex": None, "gemini": None, "opencode": None}  # fmt: skip


def codex_phase(phase_id: str) -> dict[str, Any]:
    return {**phase(phase_id), "agent": {"backend": "codex", "model": "gpt-5"}}


def beat(rig: AccountRig, **versions: dict[str, Any]) -> None:
    for name, found in versions.items():
        rig.queues[name].beat(name, "idle", versions=found)


def workers_of(rig: AccountRig, phase_id: str) -> list[str]:
    return [a.worker for a in rig.store.attempts(rig.run_id, phase_id)]


def test_a_codex_phase_goes_to_the_one_worker_that_has_codex(tmp_path: Path) -> None:
    rig = AccountRig(tmp_path, [codex_phase("x")], [])
    try:
        beat(rig, w1=NO_CODEX, w2=WITH_CODEX)  # w1 comes first on a tie: it must not win
        rig.orchestrator.tick()
        assert workers_of(rig, "x") == ["w2"]
        assert (
            rig.orchestrator.build_task(rig.store.attempts(rig.run_id, "x")[0]).agent["backend"]
            == "codex"
        )
    finally:
        rig.close()


def test_with_no_worker_having_codex_the_phase_waits_saying_so_then_starts(
    tmp_path: Path,
) -> None:
    rig = AccountRig(tmp_path, [codex_phase("x")], [])
    try:
        beat(rig, w1=NO_CODEX, w2=NO_CODEX)
        rig.orchestrator.tick()
        rig.clock.advance(1)
        beat(rig, w1=NO_CODEX, w2=NO_CODEX)
        rig.orchestrator.tick()
        row = rig.store.phases(rig.run_id)["x"]
        assert workers_of(rig, "x") == [] and row.state == "waiting" and row.failures == 0
        assert (
            row.reason == "none with agent codex (w1: codex not installed; w2: codex not installed)"
        )
        stuck = [d for k, d in rig.events if k == "phase_stuck"]
        assert stuck == [{"phase": "x", "reason": row.reason}]  # said once, not every tick
        rig.clock.advance(1)
        beat(rig, w1=NO_CODEX, w2=WITH_CODEX)  # codex installed on w2: its next check says so
        rig.orchestrator.tick()
        assert workers_of(rig, "x") == ["w2"]
        assert rig.store.phases(rig.run_id)["x"].reason is None
    finally:
        rig.close()


def test_claude_code_on_the_workers_own_credential_skips_a_worker_without_one(
    tmp_path: Path,
) -> None:
    rig = AccountRig(tmp_path, [phase("x")], [])
    try:
        beat(rig, w1={**NO_CODEX, "claude_auth": None}, w2=NO_CODEX)
        rig.orchestrator.tick()
        assert workers_of(rig, "x") == ["w2"]
    finally:
        rig.close()


def test_a_fallback_agent_installed_where_the_phases_own_is_not_takes_the_phase(
    tmp_path: Path,
) -> None:
    """Claude Code accounts usable everywhere, but only w2 has `claude`, and w1 `codex`:
    with w2 busy the phase may start on w1 with its fallback, never with `claude` there."""
    accounts = [Account("claude-a", "claude-code", 2), Account("codex-a", "codex")]
    phases = [phase("x", fallback=[{"backend": "codex", "model": "gpt-5"}]),
              phase("y", fallback=[{"backend": "codex", "model": "gpt-5"}])]  # fmt: skip
    rig = AccountRig(tmp_path, phases, accounts)
    try:
        beat(rig, w1=WITH_CODEX, w2=NO_CODEX)
        rig.orchestrator.tick()
        chosen = {a.worker: a.account for a in rig.store.attempts(rig.run_id)}
        assert chosen == {"w1": "codex-a", "w2": "claude-a"}
    finally:
        rig.close()


def test_with_neither_agent_nor_its_fallback_anywhere_the_reason_names_each_lack(
    tmp_path: Path,
) -> None:
    accounts = [
        Account("claude-a", "claude-code", 1, frozenset({"w2"})),
        Account("codex-a", "codex"),
    ]
    rig = AccountRig(tmp_path, [phase("x", fallback=[{"backend": "codex"}])], accounts)
    try:
        beat(rig, w1=NO_CODEX, w2={**NO_CODEX, "claude_code": None})
        rig.orchestrator.tick()
        assert workers_of(rig, "x") == []
        assert rig.store.phases(rig.run_id)["x"].reason == (
            "none with agent claude-code or codex (w1: no claude-code account usable there, "
            "codex not installed; w2: claude-code not installed, codex not installed)"
        )
    finally:
        rig.close()


def test_offers_reads_the_heartbeats_versions_and_pick_skips_what_is_missing() -> None:
    assert offers(WITH_CODEX, "codex", own_credential=True)
    assert not offers({"codex": None}, "codex", own_credential=True)
    assert offers({}, "codex", own_credential=True)  # an older worker: not held against it
    assert offers({"codex": None}, "command", own_credential=True)  # no CLI to look for
    no_login = {**NO_CODEX, "claude_auth": None}
    assert not offers(no_login, "claude-code", own_credential=True)
    assert offers(no_login, "claude-code", own_credential=False)  # an account's credential
    accounts = [Account("claude-a", "claude-code"), Account("codex-a", "codex")]
    choice = pick(["claude-code", "codex"], "w1", accounts, {}, {}, 0.0, missing={"claude-code"})
    assert not isinstance(choice, str) and (choice.agent, choice.fallback) == ("codex", True)
    assert pick(["codex"], "w1", accounts, {}, {}, 0.0, missing={"codex"}) == (
        "every account is held or busy (codex: not installed on w1)"
    )


# -- the same through real workers, whose check finds (or not) the fake codex ---------------


@pytest.mark.slow
def test_real_workers_a_codex_phase_waits_for_a_worker_with_codex_then_runs_there(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Two workers without codex: the run waits, `control status` saying why, and no
    worker is sent the phase (nor fails it). codex installed on w1 (its worker.toml
    names the fake, as the role's pin would): the phase runs there, never on w2."""
    scenario = pipeline.agent_io / "scenario.json"
    scenario.write_text(json.dumps({"scenario": "success", "files": {"api.txt": "ready\n"}}))
    absent = tmp_path / "not-installed" / "codex"
    fleet = pipeline.start_fleet(
        WorkerShape("w1"), WorkerShape("w2"), settings={"codex": str(absent)},
        env={"OPENAI_API_KEY": "sk-proj-test-0000", "FAKE_AGENT_SCENARIO_FILE": str(scenario)},
    )  # fmt: skip
    spec = write_spec(tmp_path / "spec.json", [codex_phase("api")], agent={"backend": "codex"})
    process = pipeline.start_dispatch(spec)
    reason = "none with agent codex (w1: codex not installed; w2: codex not installed)"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()
        shown = control("status", "--state", str(pipeline.state), "--json")
        if shown.returncode == 0 and json.loads(shown.stdout)["phases"]["api"]["reason"] == reason:
            break
        assert time.monotonic() < deadline, shown.stdout + shown.stderr
        time.sleep(0.2)
    status = json.loads(shown.stdout)["phases"]["api"]
    assert status["state"] == "waiting" and status["failures"] == 0, status
    table = control("status", "--state", str(pipeline.state)).stdout
    assert reason in " ".join(table.split()), table  # the table wraps it at 80 columns
    for worker in fleet.workers.values():
        with Queue(worker.queue_db, create=False) as queue:
            assert sum(queue.stats().by_state.values()) == 0  # nothing sent, nor failed there

    fleet.stop("w1")
    config = fleet.workers["w1"].config
    config.write_text(config.read_text().replace(str(absent), str(FAKES / "codex")))
    fleet.start("w1")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    events = parse_events(out)
    assert events[-1]["status"] == "done"
    assert [e["worker"] for e in events if e.get("event") == "dispatched"] == ["w1"]
    assert pipeline.branch_file("sa/api", "api.txt") == "ready\n"
