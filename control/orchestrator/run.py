"""The tick, and the end of a run: the parts (`control.orchestrator`) put together."""

from __future__ import annotations

from control.messages import INTEGRATION_KEY_PREFIX
from control.orchestrator.base import IN_FLIGHT, RunOutcome
from control.orchestrator.dispatching import Dispatching
from control.orchestrator.responses import Responses
from control.transport import PollResult


class Orchestrator(Dispatching, Responses):
    """One run driven tick by tick (`tick`) until `outcome` says it ended."""

    def tick(self) -> None:
        """One round: poll, judge liveness, store responses, write off lost attempts,
        deliver owed cancels, dispatch. A failed call is logged and tried again next
        tick; it never ends the run."""
        now = self.clock()
        self._pins = self.store.run(self.run_id).pins  # `control repin` may move them
        watched = self._watched_keys()
        results = self.transports.poll(
            list(self.workers.values()),
            first=[f"{self.run_id}/", f"{INTEGRATION_KEY_PREFIX}{self.run_id}/", "freeform/"],
            keys=watched,
        )
        for name, result in results.items():
            self._liveness(name, result, now)
        for name, result in results.items():
            if result.reachable:
                self._ingest(self.workers[name], result)
        self._unknown_to_their_workers(results)
        self._handed_back_by_drained(results)
        self._abandon_lost()
        self.deliver_cancels(results)
        self._resend()
        self._dispatch()
        self._alerts(results)

    def _watched_keys(self) -> list[str]:
        """The keys of this run's attempts in flight: each poll asks their inboxes."""
        return [a.key for a in self.store.attempts(self.run_id) if a.state == "dispatched"]

    def _alerts(self, results: dict[str, PollResult]) -> None:
        rows = self.store.workers()
        now = self.clock()
        for name, result in results.items():
            oldest = result.stats.get("oldest_pending_age_s")
            row = rows.get(name)
            if not result.reachable or row is None or row.status != "up" or oldest is None:
                continue
            if oldest > self.settings.pending_alert_s and (
                row.alerted_at is None or now - row.alerted_at > self.settings.pending_alert_s
            ):
                self.store.update_worker(name, alerted_at=now)
                self._say("alert_pending", worker=name, oldest_pending_s=round(oldest))

    def outcome(self) -> RunOutcome | None:
        """The end of the run, once nothing more can happen; None while it goes on."""
        phases = self.store.phases(self.run_id)
        states = {p: row.state for p, row in phases.items()}
        if all(s == "done" for s in states.values()):
            return RunOutcome(self.run_id, "done", phases)
        if self._over_budget is not None and not any(s in IN_FLIGHT for s in states.values()):
            return RunOutcome(self.run_id, "failed", phases, self._over_budget)
        dead = {p for p, s in states.items() if s in ("dead", "cancelled")}
        if not dead:
            return None
        open_phases = {p for p, s in states.items() if s not in ("done", "dead", "cancelled")}
        if any(states[p] in IN_FLIGHT for p in open_phases):
            return None
        if open_phases - self.dag.blocked_by(dead):
            return None  # something can still run
        reasons = {p: phases[p].reason or phases[p].state for p in sorted(dead)}
        blocked = sorted(open_phases)
        reason = "; ".join(f"{p}: {r}" for p, r in reasons.items())
        if blocked:
            reason += f" (blocked: {', '.join(blocked)})"
        return RunOutcome(self.run_id, "failed", phases, reason, reasons)
