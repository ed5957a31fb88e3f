"""The run loop: from a validated spec to pushed, verified branches across the fleet.

Each tick polls every worker in one fan-out per transport, stores the responses
(then acknowledges them), checks each reported branch on the remote at the
reported commit, notices workers that went quiet and reassigns their phases, and
dispatches the phases that became ready to the workers the scheduler picks. Every
decision is committed to the state database before it is acted on, so the loop
can be killed at any point and resumed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control import events
from control.accounts import Account, Choice, pick
from control.budget import OverBudget, Spend, burn_pause_until, usd
from control.errors import SuperagentError, UsageError
from control.git import Workspace, workspace_root
from control.health import (
    HEARTBEAT_TIMEOUT_S,
    NOT_WORKING,
    PENDING_ALERT_S,
    REFUSING,
    beat_of,
    off_pins,
)
from control.inventory import Worker
from control.messages import (
    INTEGRATION_KEY_PREFIX,
    WIP_REF_PREFIX,
    PhaseResponse,
    PhaseTask,
    PrerequisiteRef,
    attempt_ref,
    to_b64,
    wip_ref,
)
from control.recovery import continuation
from control.scheduler import (
    Assignment,
    Outlook,
    ReadyPhase,
    WorkerState,
    assign,
    frees_in,
)
from control.spec import Phase, Spec
from control.state import AttemptRow, PhaseRow, StateStore
from control.transport import PollResult, Transports
from control.upkeep import deliver_cancels

log = logging.getLogger("superagent.orchestrator")

IN_FLIGHT = ("sending", "dispatched")
QUEUE_MAX_ATTEMPTS = 2  # lease expiries on one worker before its inbox declares the message dead


@dataclass
class Settings:
    poll_interval_s: float = 2.0
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    unreachable_polls: int = 3
    retry_backoff_s: float = 15.0
    max_backoff_s: float = 600.0
    max_concurrent: int | None = None  # agent runs across the fleet (one account's limit)
    stagger_s: float = 0.0  # at least this long between two dispatches, fleet-wide
    pending_alert_s: float = PENDING_ALERT_S
    rate_limit_wait_s: float = 300.0  # when a rate-limited agent does not say until when
    git_timeout_s: float = 60.0
    # An attempt still in flight this long after its phase's timeout is written off
    # (its worker lost it, or it waited behind another run's work) and reassigned.
    overdue_grace_s: float = 600.0
    # Machine losses a phase may suffer before it is dead: they never use up the
    # phase's own attempts, but a phase that kills every machine must end somewhere.
    max_losses: int = 10


@dataclass
class RunOutcome:
    run_id: str
    status: str  # done, failed
    phases: dict[str, PhaseRow]
    reason: str | None = None
    dead: dict[str, str] = field(default_factory=dict)


Emit = Callable[[str, dict[str, Any]], None]


class Orchestrator:
    def __init__(
        self,
        spec: Spec,
        workers: Sequence[Worker],
        store: StateStore,
        transports: Transports,
        settings: Settings | None = None,
        *,
        repo_url: str | None = None,
        agent: dict[str, Any] | None = None,
        replay_dir: Path | None = None,
        work_dir: Path | None = None,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.time,
        accounts: Sequence[Account] = (),
    ) -> None:
        self.spec = spec
        self.accounts = {a.name: a for a in accounts}
        self.workers = {w.name: w for w in workers}
        self.store = store
        self.transports = transports
        self.settings = settings or Settings()
        self.repo_url = repo_url or spec.repo.url
        self.agent_override = agent or {}
        self.replay_dir = replay_dir
        # The orchestrator's own clone: it checks pushed branches and builds the merge.
        self.work_dir = work_dir or store.path.parent / "git"
        self.git = Workspace(
            workspace_root(self.work_dir, self.repo_url),
            self.repo_url,
            author_name="superagent",
            author_email="superagent@localhost",
            timeout_s=self.settings.git_timeout_s,
        )
        self.emit: Emit = emit or (lambda kind, data: None)
        self.clock = clock
        self.dag = spec.dag()
        self.bottom = self.dag.bottom_levels()
        self.run_id = ""
        self._last_dispatch = 0.0
        self._first_seen: dict[str, float] = {}
        self._stuck: dict[str, str | None] = {}
        self._pins: dict[str, str] | None = None  # the run's own, read every tick
        # Why the run cannot go on within its budget (set by `_dispatch` when a ready
        # phase does not fit and nothing is in flight that could free money): the run ends.
        self._over_budget: str | None = None

    # -- runs ----------------------------------------------------------------------

    def attach(self, run_id: str) -> None:
        self.run_id = run_id
        self._pins = self.store.run(run_id).pins

    def _phase(self, phase_id: str) -> Phase:
        return self.spec.phase(phase_id)

    # -- the tick ------------------------------------------------------------------------

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

    # -- liveness -------------------------------------------------------------------------

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
            why = (
                f"refusing work: {beat.get('reason')}"
                if refusing and beat
                else f"no heartbeat for {now - reference:.0f}s"
            )
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
        machine loss (never one of the phase's own attempts), with a cancel owed."""
        rows = self.store.workers()
        now = self.clock()
        phases = self.store.phases(self.run_id)
        for attempt in self.store.attempts(self.run_id):
            phase = phases[attempt.phase_id]
            if attempt.state not in IN_FLIGHT or phase.attempt != attempt.attempt:
                continue
            worker = rows.get(attempt.worker)
            if attempt.worker not in self.workers:
                reason = f"worker {attempt.worker} is no longer in the inventory"
            elif worker is not None and worker.status == "down":
                reason = f"worker {attempt.worker} down: {worker.reason or 'no contact'}"
            elif attempt.state == "dispatched" and now > (attempt.dispatched_at or now) + (
                self._phase(attempt.phase_id).timeout_minutes * 60 + self.settings.overdue_grace_s
            ):
                reason = f"no answer from {attempt.worker} within the phase's timeout and grace"
            else:
                continue
            self._lose_attempt(attempt, phase, reason)

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

    def _lose_attempt(self, attempt: AttemptRow, phase: PhaseRow, reason: str) -> None:
        self._fail_attempt(attempt, phase, reason, attempt_state="abandoned", loss=True)

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

    # -- responses -------------------------------------------------------------------------

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
            self.store.settle_attempt(
                attempt,
                attempt_state="failed",
                phase_state="waiting",
                reason=reason,
                response=message,
                not_before=not_before,
                cost_usd=cost,
                event="rate_limited",
            )
            self._say("rate_limited", phase=attempt.phase_id, worker=attempt.worker, until=until)
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
        self.store.settle_attempt(
            attempt,
            attempt_state="done",
            phase_state="done",
            reason=None,
            response=message,
            commit=commit,
            cost_usd=response.cost_usd if response.cost_known else None,
            summary=response.summary[:2000],
            event="phase_done",
        )
        self._say("phase_done", phase=attempt.phase_id, worker=attempt.worker, commit=commit)
        return True

    def repair_branches(self) -> list[str]:
        """Point every done phase's branch back at its accepted commit where something
        moved it (a stale worker of an older superagent, a person): the run then merges
        what it accepted instead of wedging. Returns the phases repaired."""
        repaired = []
        for phase_id, row in self.store.phases(self.run_id).items():
            if row.state != "done" or not row.commit_sha:
                continue
            if self.git.remote_commit(row.branch) == row.commit_sha:
                continue
            accepted = next(
                (
                    a
                    for a in self.store.attempts(self.run_id, phase_id)
                    if a.state == "done" and a.push_ref
                ),
                None,
            )
            if accepted is None or accepted.push_ref is None:
                continue
            self.git.promote(accepted.push_ref, row.commit_sha, row.branch)
            self._say("branch_repaired", phase=phase_id, commit=row.commit_sha)
            repaired.append(phase_id)
        return repaired

    def forget_checkpoints(self) -> list[str]:
        """Delete the run's checkpoints from the remote once its result is merged: work
        in progress of a finished run is worth nothing. Best effort: a failure is
        logged, and the refs (never read as results) stay until the next merge."""
        try:
            return self.git.delete_remote_refs(f"{WIP_REF_PREFIX}{self.run_id}/")
        except SuperagentError as exc:
            log.warning("cannot delete the checkpoints of run %s: %s", self.run_id, exc)
            return []

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
    ) -> None:
        """Close an attempt that did not succeed: the phase waits for its next attempt
        (after a backoff when it failed; at once when its machine was lost), or is dead
        once its own attempts, or its machine losses, are used up."""
        owe = attempt_state == "abandoned"
        failures = phase.failures + int(not loss)
        losses = phase.losses + int(loss)
        limit = self._phase(phase.phase_id).max_attempts
        if final or failures >= limit or losses >= self.settings.max_losses:
            if final:
                why = reason
            elif loss:
                why = f"{reason} (lost {losses} times; at most {self.settings.max_losses})"
            else:
                why = f"{reason} (attempt {failures} of {limit})"
            if self.store.settle_attempt(
                attempt,
                attempt_state=attempt_state,
                phase_state="dead",
                reason=why,
                response=response,
                count_failure=not loss,
                count_loss=loss,
                owe_cancel=owe,
                cost_usd=cost,
                event="phase_dead",
            ):
                self._say("phase_dead", phase=phase.phase_id, worker=attempt.worker, reason=why)
            return
        backoff = 0.0
        if not loss:  # exponential: 15 s, 30 s, 60 s ... up to max_backoff_s
            backoff = min(
                self.settings.max_backoff_s,
                self.settings.retry_backoff_s * 2 ** max(0, failures - 1),
            )
        if self.store.settle_attempt(
            attempt,
            attempt_state=attempt_state,
            phase_state="waiting",
            reason=reason,
            response=response,
            count_failure=not loss,
            count_loss=loss,
            owe_cancel=owe,
            cost_usd=cost,
            not_before=self.clock() + backoff,
            event="phase_lost" if loss else "phase_retry",
        ):
            self._say(
                "phase_lost" if loss else "phase_retry",
                phase=phase.phase_id,
                worker=attempt.worker,
                reason=reason,
                retry_in=round(backoff, 1),
            )

    # -- dispatch ----------------------------------------------------------------------------

    def _resend(self) -> None:
        """Attempts recorded as `sending` whose enqueue was never confirmed (a crash): resend.

        The key is the same, so a send that did land is stored once and reported as a
        duplicate; nothing runs twice.
        """
        up = {w.name for w in self.up_workers()}
        for attempt in self.store.attempts(self.run_id):
            if attempt.state == "sending" and attempt.worker in up:
                self._send(attempt)

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

    def _dispatch(self) -> None:
        now = self.clock()
        if self._paused(now):
            return
        phases = self.store.phases(self.run_id)
        done = {p for p, row in phases.items() if row.state == "done"}
        in_flight = [row for row in phases.values() if row.state in IN_FLIGHT]
        blocked = {p for p, row in phases.items() if row.state not in ("waiting", "done")}
        ready_ids = [
            p for p in self.dag.ready(done, running=blocked) if (phases[p].not_before or 0.0) <= now
        ]
        if not ready_ids:
            return
        limit = self.settings.max_concurrent
        room = len(ready_ids) if limit is None else max(0, limit - len(in_flight))
        if self.settings.stagger_s > 0:
            if now - self._last_dispatch < self.settings.stagger_s:
                return
            room = min(room, 1)
        if room == 0:
            return
        busy: dict[str, int] = {}
        urgent: dict[str, float] = {}  # the highest priority running on each worker
        # (since when, estimate) of each phase running there: when a slot should free
        running: dict[str, list[tuple[float, float]]] = {}
        for p, row in phases.items():
            if row.worker and row.state in IN_FLIGHT:
                busy[row.worker] = busy.get(row.worker, 0) + 1
                urgent[row.worker] = max(urgent.get(row.worker, 0.0), self.bottom[p])
                estimate = (row.updated_at, self._phase(p).estimate_minutes)
                running.setdefault(row.worker, []).append(estimate)
        holds: dict[str, set[str]] = {}
        for p in done:
            if phases[p].worker:
                holds.setdefault(phases[p].worker or "", set()).add(p)
        states = [
            WorkerState(
                w.name,
                self._capabilities(w),
                max(0, w.slots - busy.get(w.name, 0)),
                frozenset(holds.get(w.name, set())),
                slots=w.slots,
                slot_cost=w.slot_cost,
                running_priority=urgent.get(w.name, 0.0),
                frees_in=frees_in(running.get(w.name, ()), now, w.slot_cost),
            )
            for w in self.up_workers()
        ]

        def as_ready(p: str) -> ReadyPhase:
            return ReadyPhase(
                id=p,
                requires=self._requires(p),
                pin=self._phase(p).worker,
                priority=self.bottom[p],
                depends_on=frozenset(self._phase(p).depends_on),
                minutes=self._phase(p).estimate_minutes,
            )

        ready = [as_ready(p) for p in ready_ids]
        # Rarity is judged against all the work not started, and when it could be ready.
        not_started = [p for p, row in phases.items() if row.state == "waiting"]
        outlook = Outlook.of(map(as_ready, not_started), self.dag.soonest(done, blocked))
        assigned, over = self._start(assign(ready, states, outlook)[:room], now)
        self._note_over_budget(over, in_flight=bool(in_flight or assigned))
        self._say_stuck([r for r in ready if r.id not in assigned and r.id not in over], states)

    def _start(self, assignments: list[Assignment], now: float) -> tuple[set[str], dict[str, str]]:
        """Record and send each assignment on an account (when its agent has accounts)
        with its cap reserved; returns the phases sent, and why each other one waits."""
        assigned: set[str] = set()
        over: dict[str, str] = {}
        held = self._account_holds(now)
        in_use = self.store.accounts_in_use()
        for assignment in assignments:
            choice = self._account_for(assignment.phase_id, assignment.worker, in_use, held, now)
            if isinstance(choice, str):
                over[assignment.phase_id] = choice
                continue
            try:
                attempt = self.store.record_sending(
                    self.run_id,
                    assignment.phase_id,
                    assignment.worker,
                    cap_usd=self._phase(assignment.phase_id).budget_usd,
                    account=None if choice is None else choice.account.name,
                )
            except OverBudget as exc:
                over[assignment.phase_id] = f"over budget: {exc}"
                continue
            if choice is not None:
                in_use[choice.account.name] = in_use.get(choice.account.name, 0) + 1
            assigned.add(assignment.phase_id)
            self._send(attempt)
            self._last_dispatch = self.clock()
        return assigned, over

    def _capabilities(self, worker: Worker) -> frozenset[str]:
        """A worker's capabilities, plus `account:<agent>` for each agent it holds an
        account of: a phase whose agent has accounts goes only where one is usable."""
        held = {f"account:{a.agent}" for a in self.accounts.values() if a.usable_on(worker.name)}
        return worker.capabilities | held

    def _requires(self, phase_id: str) -> frozenset[str]:
        phase = self._phase(phase_id)
        own = phase.agent.backend
        extra = {f"account:{own}"} if any(a.agent == own for a in self.accounts.values()) else set()
        return frozenset(phase.requires) | extra

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

    def _account_for(
        self, phase_id: str, worker: str, in_use: dict[str, int], held: dict[str, float],
        now: float,
    ) -> Choice | str | None:  # fmt: skip
        """The account a dispatch runs on (control.accounts.pick): the phase's agent, then
        its fallbacks; None when its agent has no accounts (the worker's own credential);
        the reason it waits when every account is held or busy."""
        options = self._phase(phase_id).agent
        if not any(a.agent == options.backend for a in self.accounts.values()):
            return None
        agents = [backend for backend, _ in options.chain()]
        return pick(agents, worker, list(self.accounts.values()), in_use, held, now)

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

    def _say_stuck(self, waiting: list[ReadyPhase], states: list[WorkerState]) -> None:
        """A ready phase that no live worker can take: say why, once per change (in the
        log, the live view and `status`), instead of waiting in silence."""
        rows = self.store.workers()
        for phase in waiting:
            capable = [
                w for w in self.workers.values()
                if phase.requires <= self._capabilities(w)
                and (phase.pin is None or phase.pin == w.name)
            ]  # fmt: skip
            live = {s.name for s in states}
            if not capable:
                reason = "no worker in the inventory can take it"
            elif any(w.name in live for w in capable):
                reason = None  # a capable worker is up: it waits for a free slot
            else:
                refusing = [
                    f"{w.name}: {rows[w.name].reason}"
                    for w in capable
                    if w.name in rows and rows[w.name].beat_status == REFUSING
                ]
                drained = [w.name for w in capable if w.name in rows and rows[w.name].drained]
                off = [
                    f"{w.name}: {', '.join(found)}"
                    for w in capable
                    if w.name in rows and (found := off_pins(rows[w.name].versions, self._pins))
                ]
                need = f" with {', '.join(sorted(phase.requires))}" if phase.requires else ""
                if refusing and len(refusing) == len(capable):
                    reason = "every capable worker refuses work (" + "; ".join(refusing) + ")"
                elif drained and len(drained) == len(capable):
                    reason = f"every capable worker is drained ({', '.join(drained)})"
                elif off and len(off) + len(drained) >= len(capable):
                    reason = (
                        "every capable worker is drained or runs other versions than this "
                        f"run's pins ({'; '.join(off)})"
                    )
                else:
                    reason = f"no live worker{need} (capable: {', '.join(w.name for w in capable)})"
            if self._stuck.get(phase.id) != reason:
                self._stuck[phase.id] = reason
                self.store.note_waiting(self.run_id, phase.id, reason)
                if reason is not None:
                    self._say("phase_stuck", phase=phase.id, reason=reason)

    def _send(self, attempt: AttemptRow) -> None:
        worker = self.workers[attempt.worker]
        try:
            payload = self.build_task(attempt).to_payload()
        except (SuperagentError, OSError, ValueError) as exc:
            # Nothing a retry can mend (a recording that cannot be read, say): this
            # phase ends with the reason; the run and the other phases go on.
            phase = self.store.phases(self.run_id)[attempt.phase_id]
            self._fail_attempt(attempt, phase, f"cannot build the task: {exc}", final=True)
            return
        try:
            sent = self.transports.enqueue(
                worker, payload, key=attempt.key, max_attempts=QUEUE_MAX_ATTEMPTS
            )
        except SuperagentError as exc:
            log.warning("enqueue of %s on %s failed: %s", attempt.key, worker.name, exc)
            self._say("send_failed", phase=attempt.phase_id, worker=worker.name, reason=str(exc))
            return
        self.store.record_dispatched(attempt, sent.id, sent.duplicate)
        self._say(
            "dispatched",
            phase=attempt.phase_id,
            worker=worker.name,
            attempt=attempt.attempt,
            duplicate=sent.duplicate,
        )

    def build_task(self, attempt: AttemptRow) -> PhaseTask:
        phase = self._phase(attempt.phase_id)
        rows = self.store.phases(self.run_id)
        prerequisites = tuple(
            PrerequisiteRef(
                dep,
                rows[dep].branch,
                rows[dep].commit_sha or "",
                rows[dep].summary or "",
                self._phase(dep).task if self.spec.resolve_conflicts else "",
            )
            for dep in phase.depends_on
        )
        agent = {k: v for k, v in _agent_dict(phase).items() if v not in (None, (), [])}
        agent.update(self.agent_override)
        after = continuation(
            self.store.attempts(self.run_id, phase.id), attempt.attempt, phase.feedback_rounds
        )
        if attempt.reserved_usd > 0:  # the agent's own limit is what the run reserved for it
            agent["max_budget_usd"] = round(attempt.reserved_usd, 6)
        account = self.accounts.get(attempt.account or "")
        if account is not None:
            # The account decides the agent: the phase's own or one of its fallbacks.
            models = dict(phase.agent.chain())
            if account.agent != agent.get("backend"):
                agent["model"] = models.get(account.agent)
                for key in ("allowed_tools", "permission_mode", "command"):
                    agent.pop(key, None)  # Claude Code's words mean nothing to another agent
            agent = {k: v for k, v in agent.items() if v is not None}
            agent.update(backend=account.agent, account=account.name)
        replay_files: dict[str, str] = {}
        replay_patch = None
        if agent.get("backend") == "replay":
            replay_files, replay_patch = self._recording(phase.id, after.feedback is not None)
        return PhaseTask(
            run_id=self.run_id,
            phase_id=phase.id,
            attempt=attempt.attempt,
            title=phase.title,
            task=phase.task,
            branch=rows[phase.id].branch,
            repo_url=self.repo_url,
            base_branch=self.spec.repo.base_branch,
            deliverables=phase.deliverables,
            verify=phase.verify,
            prerequisites=prerequisites,
            agent=agent,
            timeout_s=phase.timeout_minutes * 60,
            silence_s=phase.silence_minutes * 60,
            verify_timeout_s=min(phase.timeout_minutes * 60, 1800.0),
            verify_network=phase.verify_network,
            project=self.spec.name,
            replay_files_b64=replay_files,
            replay_patch_b64=replay_patch,
            push_ref=attempt.push_ref or attempt_ref(self.run_id, phase.id, attempt.attempt),
            feedback=after.feedback,
            resume_refs=after.resume_refs,
            checkpoint_ref=wip_ref(self.run_id, phase.id, attempt.attempt),
            checkpoint_interval_s=phase.checkpoint_minutes * 60,
            resolve_conflicts=self.spec.resolve_conflicts,
        )

    def _recording(
        self, phase_id: str, feedback: bool = False
    ) -> tuple[dict[str, str], str | None]:
        """The replay recording of a phase (`files/` and a patch), shipped in the message
        as the bytes they are (base64): CRLF and non-UTF-8 files arrive exactly. An
        attempt told what failed gets `<phase>/feedback/` when there is one: what the
        recorded agent did once it was told."""
        if self.replay_dir is None:
            raise UsageError("the replay agent needs --replay-dir (recordings per phase)")
        root = self.replay_dir / phase_id
        if not root.is_dir():
            raise UsageError(f"no replay recording for phase {phase_id!r} in {self.replay_dir}")
        if feedback and (root / "feedback").is_dir():
            root = root / "feedback"
        files = {
            str(path.relative_to(root / "files")): to_b64(path.read_bytes())
            for path in sorted((root / "files").rglob("*"))
            if path.is_file() and not path.is_symlink()
        }
        patch = next(
            (
                to_b64(p.read_bytes())
                for p in (root / f"{phase_id}.patch", root / "changes.patch")
                if p.is_file()
            ),
            None,
        )
        return files, patch

    # -- alerts and the end ----------------------------------------------------------------

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

    def say(self, kind: str, **data: Any) -> None:
        """Tell the log and the terminal; the kinds no state change writes go to the
        event stream here, the others were written with their change (once each)."""
        log.info("%s %s", kind, data)
        if events.written_by(kind) == "orchestrator":
            detail = {k: v for k, v in data.items() if k not in ("run", "phase", "worker")}
            self.store.event(
                data.get("run") or self.run_id or None,
                kind,
                data.get("phase"),
                data.get("worker"),
                detail,
            )
        self.emit(kind, data)

    _say = say


def _cost(message: dict[str, Any]) -> float | None:
    """What a response says its attempt cost, or None when it does not say."""
    response = PhaseResponse.from_message(message)
    return response.cost_usd if response.cost_known else None


def _agent_dict(phase: Phase) -> dict[str, Any]:
    options = phase.agent
    return {
        "backend": options.backend,
        "command": list(options.command),
        "model": options.model,
        "allowed_tools": list(options.allowed_tools),
        "permission_mode": options.permission_mode,
        "max_turns": options.max_turns,
        "max_budget_usd": options.max_budget_usd,
        "resume_command": list(options.resume_command),
        "session_pattern": options.session_pattern,
    }
