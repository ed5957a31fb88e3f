"""Which workers are alive, and the attempts written off when theirs is not: down, gone
from the inventory, past the phase's timeout, unknown to its inbox, or drained."""

from __future__ import annotations

from typing import Any

from control.health import (
    NOT_WORKING,
    STOPPED,
    beat_of,
    off_pins,
)
from control.inventory import Worker
from control.orchestrator.base import IN_FLIGHT
from control.orchestrator.settle import Settling
from control.state import AttemptRow
from control.transport import PollResult
from control.upkeep import deliver_cancels


class Liveness(Settling):
    """Judging workers from each poll, and taking back the work of those that are lost."""

    def _liveness(self, name: str, result: PollResult, now: float) -> None:
        """Up, unreachable (a blip: no new work, nothing taken away) or down (no sign of
        life for the heartbeat timeout, or refusing work: its attempts are reassigned)."""
        row = self.store.workers().get(name)
        was_down = row is not None and row.status == "down"
        self._first_seen.setdefault(name, now)
        beat_seen_at = row.beat_seen_at if row else None
        reference = beat_seen_at if beat_seen_at is not None else self._first_seen[name]
        if not result.reachable:
            unreachable = (row.unreachable if row else 0) + 1
            fields: dict[str, Any] = {"unreachable": unreachable, "reason": result.error}
            if unreachable == 1 and not was_down:
                self._say("worker_unreachable", worker=name, reason=result.error)
            if not was_down and now - reference > self.settings.heartbeat_timeout_s:
                fields.update(status="down", down_since=now)
                why = f"no sign of life for {now - reference:.0f}s (unreachable: {result.error})"
                self._say("worker_down", worker=name, reason=why)
            self.store.update_worker(name, **fields)
            return
        beat = beat_of(name, result)
        fields = {"unreachable": 0, "last_seen": now, "drained": result.drain}
        if (result.drain is None) != (row is None or row.drained is None):
            self._say(
                "worker_drained" if result.drain else "worker_undrained",
                worker=name,
                **({"now": result.drain.get("now")} if result.drain else {}),
            )
        if beat is not None:
            if result.inbox_now is not None:
                # The beat's age read on the clock that wrote it (the inbox answers with
                # its time): skew-proof, and a beat written just before the worker died
                # reads old however late it is first seen (after an outage, a restart).
                age = max(0.0, result.inbox_now - float(beat["beat_at"]))
                if age < self.settings.heartbeat_timeout_s:
                    beat_seen_at = max(beat_seen_at or 0.0, now - age)
            elif row is None or beat["beat_at"] != row.beat_at:
                # An inbox that does not say its time: a changed beat is fresh by our
                # clock; on first sight trust it only if the worker's clock says so.
                fresh = row is not None or now - beat["beat_at"] < self.settings.heartbeat_timeout_s
                beat_seen_at = now if fresh else beat_seen_at
            fields.update(
                beat_at=beat["beat_at"],
                beat_seen_at=beat_seen_at,
                beat_status=beat.get("status"),
                versions=beat.get("versions"),
                reason=beat.get("reason"),
            )
        refusing = beat is not None and beat.get("status") in NOT_WORKING
        reference = beat_seen_at if beat_seen_at is not None else self._first_seen[name]
        stale = now - reference > self.settings.heartbeat_timeout_s
        healthy = not refusing and not stale and beat_seen_at is not None
        if healthy and was_down:
            fields.update(status="up", down_since=None)
            self._say("worker_up", worker=name)
        elif not healthy and not was_down and (refusing or stale):
            why = _down_reason(beat if refusing else None, now - reference)
            fields.update(status="down", down_since=now)
            self._say("worker_down", worker=name, reason=why)
        self.store.update_worker(name, **fields)

    def up_workers(self) -> list[Worker]:
        """Workers that take this run's new work: up, beating, reachable at the last poll,
        not drained, and reporting the versions the run was started with."""
        rows = self.store.workers()
        return [
            w
            for name, w in self.workers.items()
            if name in rows
            and rows[name].status == "up"
            and rows[name].beat_seen_at is not None
            and rows[name].unreachable == 0
            and rows[name].drained is None
            and not off_pins(rows[name].versions, self._pins)
        ]

    def _abandon_lost(self) -> None:
        """Write off the attempts held by a down worker, a worker gone from the inventory,
        or past their phase's timeout plus a grace: each is reassigned at once, as a
        machine loss (never one of the phase's own attempts), with a cancel owed; a worker
        gone from the inventory is owed none (nothing can reach it): every cancel owed to
        it is dropped with the settlement, or on its own when nothing of this run was in
        flight there (written off while the host was still listed)."""
        rows = self.store.workers()
        now = self.clock()
        phases = self.store.phases(self.run_id)
        for attempt in self.store.attempts(self.run_id):
            phase = phases[attempt.phase_id]
            if attempt.state not in IN_FLIGHT or phase.attempt != attempt.attempt:
                continue
            worker = rows.get(attempt.worker)
            gone = attempt.worker not in self.workers
            if gone:
                reason = f"worker {attempt.worker} is no longer in the inventory"
            elif worker is not None and worker.status == "down":
                reason = f"worker {attempt.worker} down: {worker.reason or 'no contact'}"
            elif attempt.state == "dispatched" and now > (attempt.dispatched_at or now) + (
                self._phase(attempt.phase_id).timeout_minutes * 60 + self.settings.overdue_grace_s
            ):
                reason = f"no answer from {attempt.worker} within the phase's timeout and grace"
            else:
                continue
            self._lose_attempt(attempt, phase, reason, gone=gone)
        for host in sorted({a.worker for a in self.store.owed_cancels()} - set(self.workers)):
            self.store.drop_owed_cancels(host, f"worker {host} is no longer in the inventory")

    def _unknown_to_their_workers(self, results: dict[str, PollResult]) -> None:
        """An attempt whose inbox has never heard of it (the inbox was re-created, the
        enqueue was lost) or whose answer someone else acknowledged is written off now:
        waiting for it would wait forever."""
        phases = self.store.phases(self.run_id)
        for attempt in self.store.attempts(self.run_id):
            result = results.get(attempt.worker)
            if attempt.state != "dispatched" or result is None or attempt.key not in result.known:
                continue
            phase = phases[attempt.phase_id]
            if phase.attempt != attempt.attempt:
                continue
            state = result.known[attempt.key]
            if state is None:
                self._lose_attempt(
                    attempt, phase, f"the inbox of {attempt.worker} does not know it"
                )
            elif state == "acked":
                self._lose_attempt(
                    attempt, phase, f"its answer on {attempt.worker} was taken by someone else"
                )

    def _handed_back_by_drained(self, results: dict[str, PollResult]) -> None:
        """A worker that may not take this run's work (drained, or reporting other versions
        than the run's pins) gets none: an attempt waiting unclaimed in its inbox (or never
        sent), or handed back by `drain --now`, is reassigned at once as a machine loss;
        the cancel owed takes the message out of that inbox."""
        phases = self.store.phases(self.run_id)
        for attempt in self.store.attempts(self.run_id):
            result = results.get(attempt.worker)
            if result is None or not result.reachable:
                continue
            if result.drain is not None:
                reason = f"worker {attempt.worker} is drained"
            elif off := off_pins(
                (beat_of(attempt.worker, result) or {}).get("versions"), self._pins
            ):
                reason = f"worker {attempt.worker} is off this run's pins ({'; '.join(off)})"
            else:
                continue
            phase = phases[attempt.phase_id]
            if phase.attempt != attempt.attempt or attempt.state not in IN_FLIGHT:
                continue
            if attempt.state == "sending" or result.known.get(attempt.key) == "pending":
                self._lose_attempt(attempt, phase, reason)

    def deliver_cancels(self, results: dict[str, PollResult] | None = None) -> int:
        """Every cancel owed to a reachable worker of this fleet, of any run (an
        abandoned attempt must be stopped wherever it still runs, after its run ended
        too); see `control.upkeep.deliver_cancels`."""

        def said(attempt: AttemptRow, state: str) -> None:
            self._say(
                "stale_cancelled",
                run=attempt.run_id,
                phase=attempt.phase_id,
                worker=attempt.worker,
                attempt=attempt.attempt,
                state=state,
            )

        return deliver_cancels(self.store, self.transports, self.workers, results, said)


def _down_reason(refusal: dict[str, Any] | None, silent_s: float) -> str:
    """Why a worker is down: the beat in which it refuses work (a stopped worker says so
    on its way out, with no reason), or how long it has been silent."""
    if refusal is None:
        return f"no heartbeat for {silent_s:.0f}s"
    if refusal.get("status") == STOPPED:
        return "the worker is stopped"
    return f"refusing work: {refusal.get('reason')}"
