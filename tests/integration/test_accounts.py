"""Accounts rotated: a held account's work moves to another account, then to the fallback agent.

The orchestrator's tick driven by hand (test_orchestrator.Rig: real inboxes, state
database and git remote); the test answers as the workers, with the rate limits a real
agent reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from control.accounts import Account, from_workers, load_accounts, pick
from control.errors import UsageError
from control.events import read as read_events
from control.inventory import Worker
from control.orchestrator import Orchestrator
from control.spec import InvalidSpecError, load_spec
from tests.integration.test_orchestrator import Rig

HOUR = 3600.0


class AccountRig(Rig):
    """A Rig whose orchestrator knows the fleet's accounts."""

    def __init__(self, root: Path, phases: list[dict[str, Any]], accounts: list[Account]):
        self.accounts = accounts
        super().__init__(root, phases)

    def new_orchestrator(self, **options: Any) -> Orchestrator:
        return super().new_orchestrator(accounts=self.accounts, **options)


def phase(phase_id: str, **agent: Any) -> dict[str, Any]:
    return {
        "id": phase_id,
        "title": phase_id,
        "task": f"Write {phase_id}.txt holding the word ready and nothing else.",
        "deliverables": [f"{phase_id}.txt"],
        "verify": [f"grep -qx ready {phase_id}.txt"],
        "agent": {"backend": "claude-code", "model": "sonnet", **agent},
    }


def make(root: Path, phases: list[dict[str, Any]], accounts: list[Account]) -> AccountRig:
    rig = AccountRig(root, phases, accounts)
    return rig


def tick(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()


def rate_limited(rig: Rig, phase_id: str, reset: float) -> None:
    """The worker holding `phase_id` answers that its agent's account hit its limit."""
    attempt = [a for a in rig.store.attempts(rig.run_id, phase_id) if a.state == "dispatched"][-1]
    job = rig.queues[attempt.worker].claim(attempt.worker, 60)
    assert job is not None and job.key == attempt.key
    rig.queues[attempt.worker].fail(
        job.id,
        job.fence,
        "rate limited",
        {"status": "rate_limited", "rate_limit_reset": reset, "agent": {"cost_usd": 0.1}},
    )


def accounts_used(rig: Rig, phase_id: str) -> list[str | None]:
    return [a.account for a in rig.store.attempts(rig.run_id, phase_id)]


CLAUDE_AB = [Account("claude-a", "claude-code"), Account("claude-b", "claude-code")]


def test_a_held_accounts_work_moves_to_another_account_of_the_same_agent(tmp_path: Path) -> None:
    rig = make(tmp_path, [phase("x")], CLAUDE_AB)
    try:
        tick(rig)
        assert accounts_used(rig, "x") == ["claude-a"]
        first = rig.store.attempts(rig.run_id, "x")[0]
        task = rig.orchestrator.build_task(first).agent
        assert (task["backend"], task["account"], task["model"]) == (
            "claude-code",
            "claude-a",
            "sonnet",
        )
        rate_limited(rig, "x", rig.clock() + HOUR)
        tick(rig)  # no fleet-wide hold, no waiting for the reset: the other account takes it
        assert accounts_used(rig, "x") == ["claude-a", "claude-b"]
        assert rig.store.held_until("account:claude-a") == rig.clock() + HOUR - 0
        assert rig.store.held_until("fleet") == 0.0
        assert rig.store.phases(rig.run_id)["x"].failures == 0  # a limit is not a failure
        assert rig.store.cost_by("account", rig.run_id) == {"claude-a": 0.1}
    finally:
        rig.close()


def test_all_accounts_held_moves_the_work_to_the_fallback_agent(tmp_path: Path) -> None:
    accounts = [Account("claude-a", "claude-code"), Account("codex-a", "codex")]
    spec_phase = phase(
        "x", allowed_tools=["Read"], fallback=[{"backend": "codex", "model": "gpt-5"}]
    )
    rig = make(tmp_path, [spec_phase], accounts)
    try:
        tick(rig)
        assert accounts_used(rig, "x") == ["claude-a"]
        rate_limited(rig, "x", rig.clock() + HOUR)
        tick(rig)
        assert accounts_used(rig, "x") == ["claude-a", "codex-a"]
        second = rig.store.attempts(rig.run_id, "x")[1]
        agent = rig.orchestrator.build_task(second).agent
        assert (agent["backend"], agent["account"], agent["model"]) == ("codex", "codex-a", "gpt-5")
        assert "allowed_tools" not in agent  # Claude Code's tool names mean nothing to codex
    finally:
        rig.close()


def test_when_every_account_is_held_the_phase_waits_saying_so_then_resumes(tmp_path: Path) -> None:
    accounts = [Account("claude-a", "claude-code"), Account("codex-a", "codex")]
    rig = make(tmp_path, [phase("x", fallback=[{"backend": "codex"}])], accounts)
    try:
        tick(rig)
        rate_limited(rig, "x", rig.clock() + HOUR)
        tick(rig)
        rate_limited(rig, "x", rig.clock() + 2 * HOUR)
        tick(rig)
        assert accounts_used(rig, "x") == ["claude-a", "codex-a"]
        reason = rig.store.phases(rig.run_id)["x"].reason or ""
        assert reason.startswith("every account is held or busy (claude-code: claude-a held until")
        assert "codex: codex-a held until" in reason
        stuck = [d for k, d in rig.events if k == "phase_stuck"]
        assert len(stuck) == 1 and stuck[0]["reason"] == reason
        assert "phase_stuck" in [
            e.kind for e in read_events(rig.store.conn, run_id=rig.run_id, limit=-1)
        ]
        rig.clock.advance(HOUR + 1)  # claude-a's reset time passes
        tick(rig)
        assert accounts_used(rig, "x") == ["claude-a", "codex-a", "claude-a"]
        assert "rate_limit_resumed" in [
            e.kind for e in read_events(rig.store.conn, run_id=rig.run_id, limit=-1)
        ]
    finally:
        rig.close()


def test_an_account_runs_no_more_than_its_concurrency(tmp_path: Path) -> None:
    rig = make(tmp_path, [phase("x"), phase("y")], [Account("solo", "claude-code", 1)])
    try:
        tick(rig)
        assert [a.account for a in rig.store.attempts(rig.run_id)] == ["solo"]
        waiting = "y" if accounts_used(rig, "x") else "x"
        assert "solo busy" in (rig.store.phases(rig.run_id)[waiting].reason or "")
    finally:
        rig.close()


def test_a_phase_goes_only_to_a_host_that_holds_an_account_of_its_agent(tmp_path: Path) -> None:
    only_w2 = [Account("claude-a", "claude-code", 2, frozenset({"w2"}))]
    rig = make(tmp_path, [phase("x"), phase("y")], only_w2)
    try:
        tick(rig)
        assert {a.worker for a in rig.store.attempts(rig.run_id)} == {"w2"}
    finally:
        rig.close()


def test_pick_prefers_the_least_busy_account_and_says_why_it_waits() -> None:
    accounts = [Account("a", "codex", 2), Account("b", "codex", 2), Account("c", "gemini")]
    choice = pick(["codex"], "w1", accounts, {"a": 1}, {}, 0.0)
    assert not isinstance(choice, str) and choice.account.name == "b"
    assert pick(["claude-code"], "w1", accounts, {}, {}, 0.0) == (
        "every account is held or busy (claude-code: no account usable on w1)"
    )
    choice = pick(["codex", "gemini"], "w1", accounts, {"a": 2, "b": 2}, {}, 0.0)
    assert not isinstance(choice, str) and (choice.agent, choice.fallback) == ("gemini", True)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "a"}, "superagent_accounts must be a list"),
        ([{"name": "A!", "agent": "codex"}], "superagent_accounts[0].name: 'A!' is not an account"),
        ([{"name": "a", "agent": "gpt"}], "superagent_accounts[0].agent: 'gpt' is not one of"),
        ([{"name": "a", "agent": "codex", "token": "x"}], "[0]: unknown field 'token'"),
        ([{"name": "a", "agent": "codex", "concurrency": 0}], "[0].concurrency: must be"),
        ([{"name": "a", "agent": "codex", "hosts": ["w9"]}], "[0].hosts: 'w9' is not a worker"),
        (
            [{"name": "a", "agent": "codex"}, {"name": "a", "agent": "gemini"}],
            "superagent_accounts[1].name: account 'a' is listed twice",
        ),
    ],
)
def test_bad_accounts_are_refused_naming_where(document: Any, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_accounts(document, "inv", ["w1", "w2"])
    assert message in str(caught.value) and str(caught.value).startswith("inv: ")
    assert "\n" not in str(caught.value)


def test_accounts_come_from_the_inventory_by_name_only() -> None:
    listed = [{"name": "team", "agent": "claude-code", "credential_var": "vault_team_token"}]
    workers = [Worker("w1", vars={"superagent_accounts": listed})]
    (account,) = from_workers(workers)
    assert account == Account("team", "claude-code", 1, None, "vault_team_token")
    assert json.dumps(listed).count("vault_team_token") == 1  # a variable's name, not a value


def test_a_fallback_that_is_the_phases_own_agent_is_refused(tmp_path: Path) -> None:
    rig_spec = tmp_path / "spec.json"
    document = {
        "version": 1,
        "name": "x",
        "repo": {"url": "git@example.invalid:x.git"},
        "phases": [phase("x", fallback=[{"backend": "claude-code"}])],
    }
    rig_spec.write_text(json.dumps(document))
    where = r"\$\.phases\[0\]\.agent\.fallback\[0\]\.backend"
    with pytest.raises(InvalidSpecError, match=where + ": 'claude-code' is the phase's own agent"):
        load_spec(rig_spec)
