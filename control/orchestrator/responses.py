"""Responses from the workers: stored, then acknowledged; a `done` is believed only as far
as the remote shows it, and only then does the phase's branch move (`branches` keeps it there)."""

from __future__ import annotations

from typing import Any

from control.errors import SuperagentError
from control.inventory import Worker
from control.messages import (
    INTEGRATION_KEY_PREFIX,
    WIP_REF_PREFIX,
    PhaseResponse,
)
from control.orchestrator.base import IN_FLIGHT, log
from control.orchestrator.branches import Branches
from control.orchestrator.settle import Settling
from control.state import AttemptRow, PhaseRow
from control.transport import PollResult


class Responses(Branches, Settling):
    """Reading what the workers answered; accepted branches kept where they were accepted."""

    def _ingest(self, worker: Worker, result: PollResult) -> None:
        """Store each response, then acknowledge those stored; one bad message or a
        failed acknowledgement is logged and met again at the next poll."""
        stored: list[int] = []
        for message in result.responses:
            try:
                if self._take(message):
                    stored.append(int(message["id"]))
            except (SuperagentError, OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("response %s from %s: %s", message.get("key"), worker.name, exc)
        if not stored:
            return
        try:
            self.transports.ack(worker, stored)
        except SuperagentError as exc:
            log.warning(
                "acknowledging %d response(s) on %s failed: %s", len(stored), worker.name, exc
            )

    def _take(self, message: dict[str, Any]) -> bool:
        """Store what a response means; True when it may be acknowledged.

        A response belongs to the run that owns its attempt: another run's, while that
        run is still open, is left for its own orchestrator.
        """
        key = str(message.get("key") or "")
        if key.startswith("freeform/"):
            return self.store.store_freeform_response(key, int(message["id"]), message)
        if key.startswith(INTEGRATION_KEY_PREFIX):  # a final check (control.integration)
            return self.store.store_integration_response(key, message)
        attempt = self.store.attempt_by_key(key)
        if attempt is None:
            return False  # not ours (another state database's, or an operator's): leave it
        if attempt.run_id != self.run_id:
            if self.store.run(attempt.run_id).status == "running":
                return False
            if attempt.response is None and attempt.late_response is None:
                self.store.record_late_response(attempt, message, _cost(message))
            return True
        return self._apply(attempt, PhaseResponse.from_message(message), message)

    def _apply(self, attempt: AttemptRow, response: PhaseResponse, message: dict[str, Any]) -> bool:
        """Store what the response means; False when it must wait (and stay unacknowledged)."""
        phase = self.store.phases(attempt.run_id)[attempt.phase_id]
        current = (
            phase.attempt == attempt.attempt
            and phase.state in IN_FLIGHT
            and attempt.state in IN_FLIGHT
        )
        if not current:
            if attempt.response is None:
                self.store.record_late_response(attempt, message, _cost(message))
                self._say(
                    "late_result_ignored",
                    phase=attempt.phase_id,
                    worker=attempt.worker,
                    attempt=attempt.attempt,
                    state=response.state,
                )
            return True
        if response.state == "done" and response.status == "done":
            return self._accept_done(attempt, phase, response, message)
        reason = response.reason or f"message {response.state}"
        cost = response.cost_usd if response.cost_known else None
        if response.lease_lost or response.status == "cancelled":
            # The worker vanished mid-run (its inbox gave up) or the message was
            # cancelled under us: a loss, not the phase's failure.
            self._fail_attempt(
                attempt, phase, f"{response.status}: {reason}", response=message, loss=True,
                cost=cost,
            )  # fmt: skip
            return True
        if response.status == "rate_limited":
            until = response.rate_limit_reset or self.clock() + self.settings.rate_limit_wait_s
            account = self.accounts.get(attempt.account or "")
            if account is not None:
                # Only this account waits: the phase goes to another one at once.
                why = f"account {account.name} rate limited on {attempt.worker}"
                self.store.hold(account.hold_name(), until, why, self.run_id)
                not_before = self.clock()
            else:
                self.store.hold("fleet", until, f"rate limited on {attempt.worker}", self.run_id)
                not_before = until
            self._settle(
                attempt, event="rate_limited", said={"until": until}, attempt_state="failed",
                phase_state="waiting", reason=reason, response=message, not_before=not_before,
                cost_usd=cost,
            )  # fmt: skip
            return True
        self._fail_attempt(
            attempt, phase, f"{response.status}: {reason}", response=message, cost=cost
        )
        return True

    def _accept_done(
        self,
        attempt: AttemptRow,
        phase: PhaseRow,
        response: PhaseResponse,
        message: dict[str, Any],
    ) -> bool:
        """Accept a done report once its commit is on the remote where the attempt pushed
        it; the orchestrator then points the phase's branch at it (only it writes there)."""
        commit = response.commit
        ref = attempt.push_ref or response.push_ref
        if attempt.push_ref and response.push_ref not in (None, attempt.push_ref):
            # Only the ref this attempt was given is ever read as its result: never a
            # checkpoint (refs/superagent/wip/), never another attempt's ref.
            self._fail_attempt(
                attempt,
                phase,
                f"reported a result at {response.push_ref}, not at its own {attempt.push_ref}",
                response=message,
                cost=response.cost_usd,
            )
            return True
        try:
            found = self.git.remote_ref(ref) if ref else self.git.remote_commit(phase.branch)
        except SuperagentError as exc:
            log.warning("cannot check %s on the remote yet: %s", ref or phase.branch, exc)
            return False  # not acknowledged: the next poll brings it again
        if not commit or found != commit:
            self._fail_attempt(
                attempt,
                phase,
                f"reported {ref or phase.branch} at {commit} but the remote has "
                f"{found or 'nothing'}",
                response=message,
                cost=response.cost_usd if response.cost_known else None,
            )
            return True
        if ref:
            try:
                self.git.promote(ref, commit, phase.branch)
            except SuperagentError as exc:
                log.warning("cannot set %s to %s yet: %s", phase.branch, commit[:12], exc)
                return False
        self._settle(
            attempt, event="phase_done", said={"commit": commit}, attempt_state="done",
            phase_state="done",
            reason=None, response=message, commit=commit,
            cost_usd=response.cost_usd if response.cost_known else None,
            summary=response.summary[:2000],
        )  # fmt: skip
        return True

    def forget_checkpoints(self) -> list[str]:
        """Delete the run's checkpoints from the remote once its result is merged: work
        in progress of a finished run is worth nothing. Best effort: a failure is
        logged, and the refs (never read as results) stay until the next merge."""
        try:
            return self.git.delete_remote_refs(f"{WIP_REF_PREFIX}{self.run_id}/")
        except SuperagentError as exc:
            log.warning("cannot delete the checkpoints of run %s: %s", self.run_id, exc)
            return []


def _cost(message: dict[str, Any]) -> float | None:
    """What a response says its attempt cost, or None when it does not say."""
    response = PhaseResponse.from_message(message)
    return response.cost_usd if response.cost_known else None
