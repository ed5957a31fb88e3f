"""What holds dispatching back: a rate-limit hold, the burn-rate alarm, the budget, the
accounts (held, busy) a phase's agent may run on."""

from __future__ import annotations

from collections.abc import Collection

from control.accounts import Choice, pick
from control.budget import Spend, burn_pause_until, usd
from control.orchestrator.settle import Settling


class Pacing(Settling):
    """Money, holds and accounts, as the dispatch asks about them."""

    def _burning(self, now: float) -> bool:
        """Whether the run spends faster than its burn-rate alarm: dispatching pauses
        (a hold that survives a restart, and a notice) until the rate falls back."""
        limit = self.spec.burn_rate_usd_per_hour
        name = f"burn:{self.run_id}"
        held = self.store.held_until(name)
        if now < held:
            return True
        if held:
            self.store.release_hold(name, self.run_id, event="budget_resumed")
        if limit is None:
            return False
        spends = [Spend(at, cost) for at, cost in self.store.costs(self.run_id)]
        until = burn_pause_until(spends, now, limit)
        if until is None:
            return False
        spent = sum(s.usd for s in spends if s.at >= now - 3600)
        reason = f"spent {usd(spent)} in the last hour; the alarm is at {usd(limit)} per hour"
        self.store.hold(name, until, reason, self.run_id, event="budget_alarm")
        self._say("budget_alarm", until=until, reason=reason)
        return True

    def _paused(self, now: float) -> bool:
        """Whether dispatching waits: a fleet-wide rate-limit hold, or the burn-rate alarm."""
        held = self.store.held_until("fleet")
        if now < held:
            return True
        if held:
            self.store.release_hold("fleet", self.run_id)
        return self._burning(now)

    def _account_holds(self, now: float) -> dict[str, float]:
        """Each account's rate-limit hold; one whose time has come is released (once)."""
        held = {}
        for name, account in self.accounts.items():
            until = self.store.held_until(account.hold_name())
            if until and until <= now:
                self.store.release_hold(account.hold_name(), self.run_id)
            elif until:
                held[name] = until
        return held

    def _agents(self, phase_id: str) -> tuple[tuple[str, ...], bool]:
        """The agents a phase may run with, in order, and whether accounts decide: its
        own and then its fallbacks when its agent has accounts (each then on an account
        usable on the host), else its one agent (`--agent`'s, if given) on the worker's
        own credential."""
        options = self._phase(phase_id).agent
        if any(a.agent == options.backend for a in self.accounts.values()):
            return tuple(backend for backend, _ in options.chain()), True
        return (str(self.agent_override.get("backend") or options.backend),), False

    def _account_for(
        self, phase_id: str, worker: str, in_use: dict[str, int], held: dict[str, float],
        now: float, missing: Collection[str] = (),
    ) -> Choice | str | None:  # fmt: skip
        """The account a dispatch runs on (control.accounts.pick): the phase's agent, then
        its fallbacks, skipping those `missing` on the worker; None when its agent has no
        accounts (the worker's own credential); the reason it waits when every account
        is held or busy."""
        agents, by_accounts = self._agents(phase_id)
        if not by_accounts:
            return None
        return pick(agents, worker, list(self.accounts.values()), in_use, held, now, missing)

    def _note_over_budget(self, over: dict[str, str], *, in_flight: bool) -> None:
        """Ready phases that wait for money or an account say why (`status`, the live view,
        a `phase_stuck` notice); with nothing in flight to free money, nothing more can
        ever fit the budget: the run stops."""
        for phase_id, why in over.items():
            if self._stuck.get(phase_id) != why:
                self._stuck[phase_id] = why
                self.store.note_waiting(self.run_id, phase_id, why)
                if not why.startswith("over budget"):
                    self._say("phase_stuck", phase=phase_id, reason=why)
        over = {p: r for p, r in over.items() if r.startswith("over budget")}
        if not over or in_flight:
            self._over_budget = None
            return
        budget = self.store.run(self.run_id).budget_usd or 0.0
        spent = self.store.spending(self.run_id)["spent"]
        first = sorted(over)[0]
        reason = (
            f"stopped by its budget: {first} needs {over[first].split(' needs ', 1)[-1]}; resume "
            "with a raised budget (`control dispatch --budget`)"
        )
        if self._over_budget != reason:
            self._say("budget_stop", reason=reason, spent_usd=round(spent, 6), budget_usd=budget)
        self._over_budget = reason
