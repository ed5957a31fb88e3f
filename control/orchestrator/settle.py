"""How an attempt that did not succeed ends: the phase waits for its next attempt (after
a backoff when it failed, at once when its machine was lost) or is dead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.orchestrator.base import Base
from control.state import AttemptRow, PhaseRow


class Settling(Base):
    """Closing failed and lost attempts: the one place the retry policy is applied."""

    def _fail_attempt(
        self,
        attempt: AttemptRow,
        phase: PhaseRow,
        reason: str,
        *,
        response: Any = None,
        cost: float | None = None,
        attempt_state: str = "failed",
        loss: bool = False,
        final: bool = False,
        drop_cancels: str | None = None,
    ) -> None:
        """Close an attempt that did not succeed: the phase waits for its next attempt
        (after a backoff when it failed; at once when its machine was lost), or is dead
        once its own attempts, or its machine losses, are used up. `drop_cancels`: see
        `StateStore.settle_attempt`."""
        failures = phase.failures + int(not loss)
        losses = phase.losses + int(loss)
        limit = self._phase(phase.phase_id).max_attempts
        dead = final or failures >= limit or losses >= self.settings.max_losses
        backoff = 0.0
        if dead and loss and not final:
            reason = f"{reason} (lost {losses} times; at most {self.settings.max_losses})"
        elif dead and not final:
            reason = f"{reason} (attempt {failures} of {limit})"
        elif not dead and not loss:  # exponential: 15 s, 30 s, 60 s ... up to max_backoff_s
            backoff = min(
                self.settings.max_backoff_s,
                self.settings.retry_backoff_s * 2 ** max(0, failures - 1),
            )
        said = {"reason": reason} if dead else {"reason": reason, "retry_in": round(backoff, 1)}
        self._settle(
            attempt,
            event="phase_dead" if dead else "phase_lost" if loss else "phase_retry",
            said=said,
            attempt_state=attempt_state,
            phase_state="dead" if dead else "waiting",
            reason=reason,
            response=response,
            count_failure=not loss,
            count_loss=loss,
            owe_cancel=attempt_state == "abandoned",
            drop_cancels=drop_cancels,
            cost_usd=cost,
            not_before=None if dead else self.clock() + backoff,
        )

    def _settle(
        self, attempt: AttemptRow, *, event: str, said: Mapping[str, Any], **change: Any
    ) -> bool:
        """Close `attempt` and move its phase in one transaction (`settle_attempt`), then
        announce `event` with `said`; nothing is announced when the phase did not move (a
        cancel or an earlier settlement came first). Returns whether it moved."""
        moved = self.store.settle_attempt(attempt, event=event, **change)
        if moved:
            self._say(event, phase=attempt.phase_id, worker=attempt.worker, **said)
        return moved

    def _lose_attempt(
        self, attempt: AttemptRow, phase: PhaseRow, reason: str, *, gone: bool = False
    ) -> None:
        """A machine loss; `gone`: its worker left the inventory, so nothing can be
        delivered to it and every cancel it is owed is dropped with the settlement."""
        self._fail_attempt(
            attempt,
            phase,
            reason,
            attempt_state="abandoned",
            loss=True,
            drop_cancels=reason if gone else None,
        )

    def _move_attempt(
        self, attempt: AttemptRow, phase: PhaseRow, reason: str, *, in_inbox: bool = True
    ) -> None:
        """Take back an attempt that never started (its inbox drained, or its worker off the
        run's pins, before it was claimed): the phase waits for another worker at once,
        with no attempt or machine loss counted and nothing charged (no agent ran). The
        cancel owed takes the message out of the inbox it sits in (`in_inbox`), and stops
        it should the worker claim it first."""
        if self.store.settle_attempt(
            attempt,
            attempt_state="abandoned",
            phase_state="waiting",
            reason=reason,
            owe_cancel=in_inbox,
            cost_usd=0.0,
            not_before=self.clock(),
            event="phase_moved",
        ):
            self._say("phase_moved", phase=phase.phase_id, worker=attempt.worker, reason=reason)
