"""Accounts and budgets over a simulated day: makespan and spend with three accounts against
one account and against no fallback agent.

200 independent phases (durations and costs drawn from a seed) on a fleet with slots to
spare, so accounts are the limit. Each account has its own concurrency, a quota of agent
runs per window and a window reset time, all drawn from the seed; a replay agent on an
account whose quota is spent answers `rate_limited` a minute later with the window's
reset time, as the real CLIs do. Every dispatch goes through the real decisions: the
account from `control.accounts.pick` (the phase's agent, then its fallback), the
reservation from a real state database (`StateStore.record_sending` with the phase's
cap, settled with the attempt's real cost). Runs: three accounts with a fallback agent;
one account; three accounts with no fallback; and three accounts under a budget that
cannot cover the day, which must stop with nothing spent past it.

    .venv/bin/python bench/bench_accounts.py [--phases 200] [--seed 7]

Figures, never asserts. The last line is one JSON object:
{"makespan_ratio_vs_one_account", "budget_overshoot_usd", "idle_account_minutes", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from control.accounts import Account, pick  # noqa: E402
from control.budget import OverBudget  # noqa: E402
from control.state import StateStore  # noqa: E402

HOST = "w1"
LIMIT_NOTICE_MIN = 1  # a rejected run answers this soon


@dataclass(frozen=True)
class Work:
    id: str
    minutes: int
    cost_usd: float
    cap_usd: float


@dataclass
class Quota:
    """An account's runs per window, and when its current window resets."""

    per_window: int
    window_min: int
    next_reset: int
    used: int = 0


@dataclass
class Running:
    phase: Work
    account: str
    key: str
    ends: int
    limited: bool  # the agent will answer rate_limited (its account's quota was spent)


@dataclass
class Day:
    """One simulated run: what it took, what it spent."""

    makespan_min: int = 0
    spent_usd: float = 0.0
    done: int = 0
    rate_limited: int = 0
    stopped_by_budget: bool = False
    idle_account_minutes: int = 0
    by_account: dict[str, float] = field(default_factory=dict)


def draw_phases(rng: random.Random, count: int) -> list[Work]:
    phases = []
    for index in range(count):
        minutes = rng.randint(10, 60)
        cost = round(rng.uniform(0.3, 2.5), 2)
        phases.append(Work(f"p{index:03d}", minutes, cost, cap_usd=3.0))
    return phases


def draw_accounts(rng: random.Random) -> tuple[list[Account], dict[str, Quota]]:
    """Three accounts: two of claude-code, one of codex (the fallback agent)."""
    specs = [("claude-a", "claude-code"), ("claude-b", "claude-code"), ("codex-a", "codex")]
    accounts, quotas = [], {}
    for name, agent in specs:
        concurrency = rng.randint(2, 5)
        window = rng.choice([120, 180, 300])
        accounts.append(Account(name, agent, concurrency))
        quotas[name] = Quota(rng.randint(15, 30), window, rng.randint(30, window))
    return accounts, quotas


def simulate(
    phases: Sequence[Work],
    accounts: Sequence[Account],
    quotas: dict[str, Quota],
    *,
    fallback: bool,
    budget_usd: float | None,
    state: Path,
) -> Day:
    store = StateStore(state)
    run_id = store.create_run(
        "bench", "h", {}, [(p.id, f"b/{p.id}") for p in phases], budget_usd=budget_usd
    )
    quotas = {name: Quota(q.per_window, q.window_min, q.next_reset) for name, q in quotas.items()}
    waiting = list(phases)
    running: list[Running] = []
    holds: dict[str, float] = {}
    agents = ["claude-code", "codex"] if fallback else ["claude-code"]
    day = Day()
    now = 0
    while waiting or running:
        for quota in quotas.values():
            while now >= quota.next_reset:
                quota.used, quota.next_reset = 0, quota.next_reset + quota.window_min
        for done in [r for r in running if r.ends <= now]:
            running.remove(done)
            attempt = store.attempt_by_key(done.key)
            assert attempt is not None
            if done.limited:
                holds[done.account] = quotas[done.account].next_reset
                store.settle_attempt(
                    attempt, attempt_state="failed", phase_state="waiting",
                    reason="rate limited", cost_usd=0.0, event="rate_limited",
                )  # fmt: skip
                waiting.insert(0, done.phase)
                day.rate_limited += 1
            else:
                store.settle_attempt(
                    attempt, attempt_state="done", phase_state="done",
                    reason=None, cost_usd=done.phase.cost_usd, event="phase_done",
                )  # fmt: skip
                day.done += 1
                day.by_account[done.account] = round(
                    day.by_account.get(done.account, 0.0) + done.phase.cost_usd, 6
                )
                day.makespan_min = now
        stuck_on_budget = False
        in_use = {a.name: sum(1 for r in running if r.account == a.name) for a in accounts}
        for work in list(waiting):
            live = {n: t for n, t in holds.items() if t > now}
            choice = pick(agents, HOST, accounts, in_use, live, float(now))
            if isinstance(choice, str):
                break  # every account held or busy: the rest waits too
            try:
                attempt = store.record_sending(
                    run_id, work.id, HOST, cap_usd=work.cap_usd, account=choice.account.name
                )
            except OverBudget:
                stuck_on_budget = True
                break
            store.record_dispatched(attempt, 0, False)
            quota = quotas[choice.account.name]
            limited = quota.used >= quota.per_window
            quota.used += 1
            ends = now + (LIMIT_NOTICE_MIN if limited else work.minutes)
            running.append(Running(work, choice.account.name, attempt.key, ends, limited))
            in_use[choice.account.name] += 1
            waiting.remove(work)
        if waiting:  # work waits: every account free of holds and under its limit is idle
            live = {n for n, t in holds.items() if t > now}
            usable = [a for a in accounts if a.agent in agents]
            day.idle_account_minutes += sum(
                1 for a in usable if a.name not in live and in_use[a.name] < a.concurrency
            )
        if stuck_on_budget and not running:
            day.stopped_by_budget = True
            break
        now += 1
    day.spent_usd = round(store.spending(run_id)["spent"], 6)
    store.close()
    return day


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    phases = draw_phases(rng, args.phases)
    accounts, quotas = draw_accounts(rng)
    total = round(sum(p.cost_usd for p in phases), 2)
    budget = round(total / 2, 2)
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        root = Path(tmp)
        three = simulate(phases, accounts, quotas, fallback=True, budget_usd=None,
                         state=root / "three.db")  # fmt: skip
        one = simulate(phases, accounts[:1], quotas, fallback=False, budget_usd=None,
                       state=root / "one.db")  # fmt: skip
        no_fallback = simulate(phases, accounts, quotas, fallback=False, budget_usd=None,
                               state=root / "nofallback.db")  # fmt: skip
        capped = simulate(phases, accounts, quotas, fallback=True, budget_usd=budget,
                          state=root / "capped.db")  # fmt: skip
    for name, account in zip(("claude-a", "claude-b", "codex-a"), accounts, strict=True):
        q = quotas[name]
        print(f"{name}: {account.agent}, concurrency {account.concurrency}, {q.per_window} runs "
              f"per {q.window_min} min, first reset at minute {q.next_reset}")  # fmt: skip
    for label, day in (("three accounts", three), ("one account", one),
                       ("three, no fallback", no_fallback)):  # fmt: skip
        print(f"{label:>20}: makespan {day.makespan_min / 60:5.1f} h, {day.done} done, "
              f"{day.rate_limited} rate-limited answers, spent ${day.spent_usd:.2f}, idle "
              f"account-minutes {day.idle_account_minutes}")  # fmt: skip
    print(f"budget ${budget:.2f} of a ${total:.2f} day: {capped.done} done, spent "
          f"${capped.spent_usd:.2f}, stopped by budget: {capped.stopped_by_budget}")  # fmt: skip
    figures: dict[str, object] = {
        "makespan_ratio_vs_one_account": round(three.makespan_min / one.makespan_min, 3),
        "makespan_ratio_vs_no_fallback": round(three.makespan_min / no_fallback.makespan_min, 3),
        "budget_overshoot_usd": round(max(0.0, capped.spent_usd - budget), 6),
        "idle_account_minutes": three.idle_account_minutes,
        "makespan_h": {
            "three": round(three.makespan_min / 60, 2),
            "one": round(one.makespan_min / 60, 2),
            "no_fallback": round(no_fallback.makespan_min / 60, 2),
        },
        "spent_usd": {
            "three": three.spent_usd,
            "one": one.spent_usd,
            "no_fallback": no_fallback.spent_usd,
            "capped": capped.spent_usd,
        },
        "budget_usd": budget,
        "capped_stopped_by_budget": capped.stopped_by_budget,
        "phases": args.phases,
        "seed": args.seed,
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
