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

from control.errors import SuperagentError, UsageError
from control.git import Workspace, workspace_root
from control.inventory import Worker
from control.messages import INTEGRATION_KEY_PREFIX, PhaseTask, PrerequisiteRef
from control.scheduler import ReadyPhase, WorkerState, assign
from control.spec import Phase, Spec
from control.state import AttemptRow, PhaseRow, StateStore
from control.transport import PollResult, Transports

log = logging.getLogger("superagent.orchestrator")

IN_FLIGHT = ("sending", "dispatched")
QUEUE_MAX_ATTEMPTS = 2  # lease expiries on one worker before its inbox declares the message dead


@dataclass
class Settings:
    poll_interval_s: float = 2.0
    heartbeat_timeout_s: float = 60.0
    unreachable_polls: int = 3
    retry_backoff_s: float = 15.0
    max_backoff_s: float = 600.0
    max_concurrent: int | None = None  # agent runs across the fleet (one account's limit)
    stagger_s: float = 0.0  # at least this long between two dispatches, fleet-wide
    pending_alert_s: float = 600.0
    rate_limit_wait_s: float = 300.0  # when a rate-limited agent does not say until when
    git_timeout_s: float = 60.0


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
    ) -> None:
        self.spec = spec
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
        self._fleet_paused_until = 0.0
        self._last_dispatch = 0.0
        self._first_seen: dict[str, float] = {}

    # -- runs ----------------------------------------------------------------------

    def attach(self, run_id: str) -> None:
        self.run_id = run_id

    def _phase(self, phase_id: str) -> Phase:
        return self.spec.phase(phase_id)

    # -- the tick ------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        results = self.transports.poll(list(self.workers.values()))
        for name, result in results.items():
            self._liveness(name, result, now)
        for name, result in results.items():
            if result.reachable:
                self._ingest(self.workers[name], result)
        self._abandon_on_down_workers()
        self._resend()
        self._dispatch()
        self._alerts(results)

    # -- liveness -------------------------------------------------------------------------

    def _liveness(self, name: str, result: PollResult, now: float) -> None:
        row = self.store.workers().get(name)
        was_down = row is not None and row.status == "down"
        self._first_seen.setdefault(name, now)
        if not result.reachable:
            unreachable = (row.unreachable if row else 0) + 1
            fields: dict[str, Any] = {"unreachable": unreachable, "reason": result.error}
            if unreachable >= self.settings.unreachable_polls and not was_down:
                fields.update(status="down", down_since=now)
                why = f"unreachable for {unreachable} polls: {result.error}"
                self._say("worker_down", worker=name, reason=why)
            self.store.update_worker(name, **fields)
            return
        beat = next((b for b in result.heartbeats if b.get("worker_id") == name), None)
        if beat is None and len(result.heartbeats) == 1:
            beat = result.heartbeats[0]  # an inbox serves one worker, whatever it calls itself
        fields = {"unreachable": 0, "last_seen": now}
        beat_seen_at = row.beat_seen_at if row else None
        if beat is not None:
            if row is None or beat["beat_at"] != row.beat_at:
                # A changed beat is fresh by our clock; on first sight trust it only if
                # the worker's own clock says it is recent (skew is judged once).
                fresh = row is not None or now - beat["beat_at"] < self.settings.heartbeat_timeout_s
                beat_seen_at = now if fresh else beat_seen_at
            fields.update(
                beat_at=beat["beat_at"],
                beat_seen_at=beat_seen_at,
                beat_status=beat.get("status"),
                versions=beat.get("versions"),
                reason=beat.get("reason"),
            )
        refusing = beat is not None and beat.get("status") in ("refusing", "stopped")
        reference = beat_seen_at if beat_seen_at is not None else self._first_seen[name]
        stale = now - reference > self.settings.heartbeat_timeout_s
        healthy = not refusing and not stale and beat_seen_at is not None
        if healthy and was_down:
            fields.update(status="up", down_since=None)
            self._say("worker_up", worker=name)
            self.store.update_worker(name, **fields)
            self._cancel_abandoned(name)
            return
        if not healthy and not was_down and (refusing or stale):
            why = (
                f"refusing work: {beat.get('reason')}"
                if refusing and beat
                else f"no heartbeat for {now - reference:.0f}s"
            )
            fields.update(status="down", down_since=now)
            self._say("worker_down", worker=name, reason=why)
        self.store.update_worker(name, **fields)

    def up_workers(self) -> list[Worker]:
        rows = self.store.workers()
        return [
            w
            for name, w in self.workers.items()
            if name in rows and rows[name].status == "up" and rows[name].beat_seen_at is not None
        ]

    def _abandon_on_down_workers(self) -> None:
        rows = self.store.workers()
        down = {name for name, row in rows.items() if row.status == "down"}
        phases = self.store.phases(self.run_id)
        for attempt in self.store.attempts(self.run_id):
            if attempt.state not in IN_FLIGHT or attempt.worker not in down:
                continue
            phase = phases[attempt.phase_id]
            if phase.attempt != attempt.attempt:
                continue
            reason = f"worker {attempt.worker} down: {rows[attempt.worker].reason or 'no contact'}"
            self._fail_attempt(
                attempt,
                phase,
                reason,
                attempt_state="abandoned",
                count=attempt.state == "dispatched",
            )

    def _cancel_abandoned(self, worker_name: str) -> None:
        """A worker is back: cancel what it still holds of attempts given to others."""
        worker = self.workers[worker_name]
        for attempt in self.store.attempts(self.run_id):
            if (
                attempt.worker == worker_name
                and attempt.state == "abandoned"
                and not (attempt.cancel_sent)
            ):
                try:
                    state = self.transports.cancel(worker, attempt.key)
                except SuperagentError as exc:
                    log.warning("cancel %s on %s failed: %s", attempt.key, worker_name, exc)
                    continue
                self.store.mark_cancel_sent(attempt.key)
                self._say(
                    "stale_cancelled",
                    phase=attempt.phase_id,
                    worker=worker_name,
                    attempt=attempt.attempt,
                    state=state,
                )

    # -- responses -------------------------------------------------------------------------

    def _ingest(self, worker: Worker, result: PollResult) -> None:
        stored: list[int] = []
        for message in result.responses:
            key = message.get("key") or ""
            if key.startswith("freeform/"):
                self.store.store_freeform_response(key, message["id"], message)
                stored.append(message["id"])
                continue
            if key.startswith(INTEGRATION_KEY_PREFIX):  # a final check (control.integration)
                if self.store.store_integration_response(key, message):
                    stored.append(message["id"])
                continue
            attempt = self.store.attempt_by_key(key)
            if attempt is None:
                continue  # not ours (another orchestrator's, or an operator's): leave it
            if self._apply(attempt, message):
                stored.append(message["id"])
        if stored:
            self.transports.ack(worker, stored)

    def _apply(self, attempt: AttemptRow, message: dict[str, Any]) -> bool:
        """Store what the response means; False when it must wait (and stay unacknowledged)."""
        phases = self.store.phases(attempt.run_id)
        phase = phases.get(attempt.phase_id)
        current = (
            attempt.run_id == self.run_id
            and phase is not None
            and phase.attempt == attempt.attempt
            and phase.state in IN_FLIGHT
            and attempt.state in IN_FLIGHT
        )
        if not current:
            if attempt.response is None:
                self.store.record_late_response(attempt, message)
                self._say(
                    "late_result_ignored",
                    phase=attempt.phase_id,
                    worker=attempt.worker,
                    attempt=attempt.attempt,
                    state=message.get("state"),
                )
            return True
        assert phase is not None
        response = message.get("response") or {}
        state = message.get("state")
        cost = float((response.get("agent") or {}).get("cost_usd") or 0.0)
        if state == "done" and response.get("status") == "done":
            return self._accept_done(attempt, phase, message, response, cost)
        status = response.get("status") or state
        reason = message.get("reason") or response.get("reason") or f"message {state}"
        if status == "rate_limited":
            reset = response.get("rate_limit_reset")
            until = float(reset) if reset else self.clock() + self.settings.rate_limit_wait_s
            self._fleet_paused_until = max(self._fleet_paused_until, until)
            self.store.settle_attempt(
                attempt,
                attempt_state="failed",
                phase_state="waiting",
                reason=reason,
                response=message,
                not_before=until,
                cost_usd=cost,
                event="rate_limited",
            )
            self._say("rate_limited", phase=attempt.phase_id, worker=attempt.worker, until=until)
            return True
        self._fail_attempt(attempt, phase, f"{status}: {reason}", response=message, cost=cost)
        return True

    def _accept_done(
        self,
        attempt: AttemptRow,
        phase: PhaseRow,
        message: dict[str, Any],
        response: dict[str, Any],
        cost: float,
    ) -> bool:
        commit = response.get("commit")
        try:
            found = self.git.remote_commit(phase.branch)
        except SuperagentError as exc:
            log.warning("cannot check %s on the remote yet: %s", phase.branch, exc)
            return False  # not acknowledged: the next poll brings it again
        if not commit or found != commit:
            self._fail_attempt(
                attempt,
                phase,
                f"reported {phase.branch} at {commit} but the remote has {found or 'no branch'}",
                response=message,
                cost=cost,
            )
            return True
        self.store.settle_attempt(
            attempt,
            attempt_state="done",
            phase_state="done",
            reason=None,
            response=message,
            commit=commit,
            cost_usd=cost,
            summary=(response.get("summary") or "")[:2000],
            event="phase_done",
        )
        self._say("phase_done", phase=attempt.phase_id, worker=attempt.worker, commit=commit)
        return True

    def _fail_attempt(
        self,
        attempt: AttemptRow,
        phase: PhaseRow,
        reason: str,
        *,
        response: Any = None,
        cost: float = 0.0,
        attempt_state: str = "failed",
        count: bool = True,
    ) -> None:
        failures = phase.failures + int(count)
        limit = self._phase(phase.phase_id).max_attempts
        if failures >= limit:
            self.store.settle_attempt(
                attempt,
                attempt_state=attempt_state,
                phase_state="dead",
                reason=f"{reason} (attempt {failures} of {limit})",
                response=response,
                count_failure=count,
                cost_usd=cost,
                event="phase_dead",
            )
            self._say("phase_dead", phase=phase.phase_id, worker=attempt.worker, reason=reason)
            return
        backoff = 0.0
        if count:  # exponential: 15 s, 30 s, 60 s ... up to max_backoff_s
            backoff = min(
                self.settings.max_backoff_s,
                self.settings.retry_backoff_s * 2 ** max(0, failures - 1),
            )
        self.store.settle_attempt(
            attempt,
            attempt_state=attempt_state,
            phase_state="waiting",
            reason=reason,
            response=response,
            count_failure=count,
            cost_usd=cost,
            not_before=self.clock() + backoff,
            event="phase_retry",
        )
        self._say(
            "phase_retry",
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

    def _dispatch(self) -> None:
        now = self.clock()
        if now < self._fleet_paused_until:
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
        for row in in_flight:
            if row.worker:
                busy[row.worker] = busy.get(row.worker, 0) + 1
        holds: dict[str, set[str]] = {}
        for p in done:
            if phases[p].worker:
                holds.setdefault(phases[p].worker or "", set()).add(p)
        states = [
            WorkerState(
                w.name,
                w.capabilities,
                max(0, w.slots - busy.get(w.name, 0)),
                frozenset(holds.get(w.name, set())),
                slots=w.slots,
            )
            for w in self.up_workers()
        ]
        ready = [
            ReadyPhase(
                id=p,
                requires=frozenset(self._phase(p).requires),
                pin=self._phase(p).worker,
                priority=self.bottom[p],
                depends_on=frozenset(self._phase(p).depends_on),
                minutes=self._phase(p).estimate_minutes,
            )
            for p in ready_ids
        ]
        for assignment in assign(ready, states)[:room]:
            attempt = self.store.record_sending(self.run_id, assignment.phase_id, assignment.worker)
            self._send(attempt)
            self._last_dispatch = self.clock()

    def _send(self, attempt: AttemptRow) -> None:
        worker = self.workers[attempt.worker]
        payload = self.build_task(attempt).to_payload()
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
                dep, rows[dep].branch, rows[dep].commit_sha or "", rows[dep].summary or ""
            )
            for dep in phase.depends_on
        )
        agent = {k: v for k, v in _agent_dict(phase).items() if v not in (None, (), [])}
        agent.update(self.agent_override)
        replay_files: dict[str, str] = {}
        replay_patch = None
        if agent.get("backend") == "replay":
            replay_files, replay_patch = self._recording(phase.id)
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
            project=self.spec.name,
            replay_files=replay_files,
            replay_patch=replay_patch,
        )

    def _recording(self, phase_id: str) -> tuple[dict[str, str], str | None]:
        """The replay recording of a phase (`files/` and a patch), shipped in the message."""
        if self.replay_dir is None:
            raise UsageError("the replay agent needs --replay-dir (recordings per phase)")
        root = self.replay_dir / phase_id
        if not root.is_dir():
            raise UsageError(f"no replay recording for phase {phase_id!r} in {self.replay_dir}")
        files = {
            str(path.relative_to(root / "files")): path.read_text(encoding="utf-8")
            for path in sorted((root / "files").rglob("*"))
            if path.is_file() and not path.is_symlink()
        }
        patch = next(
            (
                p.read_text(encoding="utf-8")
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

    def _say(self, kind: str, **data: Any) -> None:
        log.info("%s %s", kind, data)
        self.emit(kind, data)


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
    }
