"""The final check of a run, sent to a worker and waited for like a phase; the merge
queue's checks of merged states (`control.merge_queue` decides which) go the same way.

The control plane never executes repository content, so the merged tree is built
and verified on a worker (`control.worker.integrate`), through the same
transports and inbox as a phase, under an idempotency key per attempt. Each
attempt is committed to the state database before it is sent; a killed
orchestrator resumes waiting for the same message. A worker that goes down has
its attempt abandoned and the check sent to another; the answer is believed only
as far as the remote shows it (`control.merge.judge`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from control.check_workers import is_down, needs, nobody_up, pick, spare_slot
from control.errors import SuperagentError, UnavailableError, UsageError
from control.merge import (
    MergeFailed,
    MergeResult,
    MergeRetry,
    conflict_reason,
    integration_task,
    judge,
)
from control.merge_queue import (
    Next,
    Reopened,
    built_on_in_flight,
    held,
    plan,
    reopen,
    superseded,
    verify_failure,
)
from control.messages import IntegrationResult, IntegrationTask
from control.orchestrator import QUEUE_MAX_ATTEMPTS, Orchestrator
from control.resolution import (
    MAX_RESOLUTIONS,
    accepted_resolution,
    conflict_of,
    is_resolution,
    judge_resolution,
    resolution_task,
)
from control.state import IntegrationRow

log = logging.getLogger("superagent.integration")

MAX_ATTEMPTS = 3  # final checks that went wrong for a reason other than the tree itself
_OPEN = ("sending", "dispatched", "answered")


class FinalCheck:
    """One run's final check, driven through an orchestrator attached to that run."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        verify: bool = True,
        max_attempts: int = MAX_ATTEMPTS,
        verify_timeout_s: float = 900.0,
        rebuild: bool = False,
        during_run: bool = False,
    ) -> None:
        """`rebuild` (`control merge`): build and check the whole run again even when its
        last verified state holds every phase. `during_run`: the merge queue while phases
        still run (`step` each tick, see `control.driver`): the accepted phases are
        checked on spare slots only, a culprit is reopened once nothing building on it
        runs, and a check that cannot go on (a conflict, a worker erring) waits for the
        end of the run instead of ending it."""
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.run_id = orchestrator.run_id
        self.verify = verify
        self.max_attempts = max_attempts
        self.verify_timeout_s = verify_timeout_s
        self.retries = 0  # checks in a row that went wrong for a reason other than the tree
        self.rebuild = rebuild
        self.during_run = during_run
        self.halted = False  # during the run: the rest waits for the end of the run
        self.last_reason = ""
        self.row: IntegrationRow | None = None  # the attempt under way

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        deadline: float | None = None,
        wait_for_worker_s: float | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> MergeResult | Reopened:
        """Until the integration branch holds every phase, checked and recorded, or the
        merge queue reopened the phase that breaks it (`control.merge_queue`: the run
        goes on); MergeFailed when it cannot be built or fails its checks for good,
        UnavailableError when no worker is up within `wait_for_worker_s` (None: wait,
        as phases do). `on_step` runs before each step (the dispatch renews its driver
        lease there)."""
        stop = stop or threading.Event()
        self._commits()  # refuses an unfinished run before anything is sent
        started = time.monotonic()
        while True:
            if stop.is_set():
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() > deadline:
                raise MergeFailed(f"timed out waiting for the final check of run {self.run_id}")
            if on_step is not None:
                on_step()
            result = self.step(
                no_worker_is_fatal=(
                    wait_for_worker_s is not None
                    and time.monotonic() - started >= wait_for_worker_s
                )
            )
            if result is not None:
                return result
            stop.wait(self.orchestrator.settings.poll_interval_s)

    def step(self, *, no_worker_is_fatal: bool = False) -> MergeResult | Reopened | None:
        """One tick of the orchestrator, then whatever the final check needs next: the
        result once it is checked on the remote, the phases the merge queue reopened,
        None while it goes on."""
        self.orchestrator.tick()
        row = self._reload(self._open() if self.row is None else self.row)
        while True:
            if row is None:
                planned = self._plan()
                if not isinstance(planned, Next) or not planned.check:
                    self.row = None
                    return None if isinstance(planned, Next) else planned
                row = self._start(planned, no_worker_is_fatal=no_worker_is_fatal)
            elif row.state in ("sending", "dispatched") and self._superseded(row):
                why = "every phase is done: the whole run is checked instead"
                self.store.settle_integration(row.key, "abandoned", why)
                self._cancel(row)
                row = None
                continue  # waiting for a part would only delay the end of the run
            elif row.state in ("sending", "dispatched") and is_down(self.orchestrator, row.worker):
                reason = f"worker {row.worker} down during the final check"
                self.store.settle_integration(row.key, "abandoned", reason)
                self._say("integration_abandoned", worker=row.worker, attempt=row.attempt)
                self._cancel(row)
                row = None
                continue  # machine loss is not a failure: send it elsewhere at once
            elif row.state == "sending":
                row = self._send(row)
            elif row.state == "answered":
                result = self._settle(row)
                if result is not None:
                    self.row = None
                    return result
                row = None
                continue  # a retry goes out now, not after another poll
            self.row = row
            return None

    # -- the attempts ----------------------------------------------------------------

    def _plan(self) -> Next | MergeResult | Reopened:
        """The merge queue's next step: a state to check, the phases it reopened, or the
        result when the last verified state holds every phase."""
        dag = self.orchestrator.dag
        if self._to_resolve() is not None or not self.verify:
            return Next(check=dag.order)  # unverified: rebuilt whole, as asked
        commits = {p: c for p, (_, c) in self._done().items()}
        finished = len(commits) == len(dag.order)
        if not finished and (self.halted or not spare_slot(self.orchestrator)):
            return Next()  # during the run: later
        rows = [r for r in self.store.integrations(self.run_id) if self._checked(r)]
        step = plan(dag, commits, rows)
        if step.culprit is not None:
            return self._reopen(step)
        if step.check or not finished:
            return step
        if self.rebuild:
            return Next(check=dag.order)
        return self._taken_up(rows)

    def _reopen(self, step: Next) -> Reopened | Next:
        """Send the culprit back, once nothing building on it runs (until then: nothing)."""
        assert step.culprit is not None
        if built_on_in_flight(self.orchestrator, step.culprit):
            return Next()
        rounds = self.orchestrator.spec.phase(step.culprit).feedback_rounds
        reopened = reopen(self.store, self.run_id, step, self.orchestrator.dag, rounds)
        for phase in reopened.phases:
            self._say(
                "phase_reopened", phase=phase, culprit=reopened.culprit, reason=reopened.reason
            )
        return reopened

    def _taken_up(self, rows: list[IntegrationRow]) -> MergeResult | Next:
        """The result from the last verified state, which holds every phase (a killed
        orchestrator resuming after it passed); rebuilt when its ref is gone."""
        last = next(r for r in reversed(rows) if r.state == "done" and not is_resolution(r))
        try:
            return self._accept(last, self._judge(last))
        except MergeFailed as exc:
            log.info("the verified state %s cannot be taken up again: %s", last.key, exc)
            return Next(check=self.orchestrator.dag.order)

    def _superseded(self, row: IntegrationRow) -> bool:
        """A check of part of the run in flight while every phase is now done and nothing
        is bisected (`control.merge_queue.superseded`)."""
        if not self.verify:
            return False
        commits = {p: c for p, (_, c) in self._done().items()}
        rows = [r for r in self.store.integrations(self.run_id) if self._checked(r)]
        return superseded(self.orchestrator.dag, commits, rows, row)

    def _checked(self, row: IntegrationRow) -> bool:
        """Whether a check ran the verify commands of its phases (not `--no-verify`)."""
        asked = any(self.orchestrator.spec.phase(p).verify for p in held(row))
        return is_resolution(row) or not asked or bool(row.task.get("checks"))

    def _start(self, planned: Next, *, no_worker_is_fatal: bool) -> IntegrationRow | None:
        """Send a new attempt to the best live worker (a resolution when the last check
        answered a conflict that may be resolved); None while there is no worker."""
        conflict = self._to_resolve()
        if conflict is None and self.retries >= self.max_attempts:
            if self.during_run:
                self.halted = True  # the end of the run tries again
                return None
            raise MergeFailed(
                f"{self.last_reason} (after {self.retries} attempts of the final check)"
            )
        worker = pick(self.orchestrator, needs(self.orchestrator.spec, self.verify))
        if worker is None:
            if no_worker_is_fatal:
                raise UnavailableError(nobody_up(self.orchestrator))
            return None
        if conflict is not None:
            commits = self._commits()
            row = self.store.record_integration_sending(
                self.run_id,
                worker.name,
                lambda attempt: resolution_task(
                    self.orchestrator, attempt, commits, conflict
                ).to_payload(),
            )
            return self._send(row)
        if planned.bisecting:
            self._say("integration_bisect", phases=list(planned.check), reason=self.last_reason)
        row = self.store.record_integration_sending(
            self.run_id,
            worker.name,
            lambda attempt: self._task(attempt, planned.check).to_payload(),
        )
        self.rebuild = False  # built again: what it answers is the result
        return self._send(row)

    def _to_resolve(self) -> dict[str, Any] | None:
        """The conflict the next attempt resolves: the last check's, when it answered one,
        the spec allows it and the run has resolutions left."""
        rows = self.store.integrations(self.run_id)
        if not rows or not self._to_resolve_after(rows[-1]):
            return None
        conflict = conflict_of(rows[-1])
        if conflict is None or sum(map(is_resolution, rows)) >= MAX_RESOLUTIONS:
            return None
        return conflict

    def _settle(self, row: IntegrationRow) -> MergeResult | None:
        """Judge an answer: the result, None to try again (or to resolve a conflict), or
        MergeFailed."""
        if is_resolution(row):
            return self._settle_resolution(row)
        if self._to_resolve_after(row):
            self.store.settle_integration(row.key, "failed", "conflict: a resolution follows")
            self._say("conflict_resolving", worker=row.worker, reason=self._conflict_text(row))
            return None
        try:
            result = self._judge(row)
        except MergeRetry as exc:
            self.store.settle_integration(row.key, "failed", str(exc))
            self._say("integration_retry", worker=row.worker, reason=str(exc))
            self.last_reason = str(exc)
            self.retries += 1
            return None
        except MergeFailed as exc:
            self._failed(row, exc)
            return None
        self.store.settle_integration(row.key, "done")
        self.retries = 0
        if set(held(row)) != set(self.orchestrator.dag.order):
            self._say(
                "integration_verified",
                worker=row.worker,
                phases=list(held(row)),
                commit=result.commit,
            )
            return None  # a state of the merge queue: the next one follows
        return self._accept(row, result)

    def _failed(self, row: IntegrationRow, exc: MergeFailed) -> None:
        """A check that failed for its tree: the merge queue finds the phase that broke
        it; during the run a conflict waits for the end of it; else MergeFailed."""
        self.store.settle_integration(row.key, "failed", str(exc))
        self.last_reason = str(exc)
        settled = self._reload(row)
        if self.orchestrator.spec.merge_queue and settled and verify_failure(settled):
            self.retries = 0
            return
        if not self.during_run:
            raise exc
        self.halted = True  # a conflict: resolved at the end of the run, as before

    def _accept(self, row: IntegrationRow, result: MergeResult) -> MergeResult:
        """The run's result: the verified state that holds every phase."""
        self.store.set_merge(self.run_id, result.branch, result.commit)
        self.orchestrator.forget_checkpoints()
        self._say(
            "merged",
            branch=result.branch,
            commit=result.commit,
            worker=result.worker,
            checks=len(result.checks),
        )
        return result

    def _settle_resolution(self, row: IntegrationRow) -> MergeResult | None:
        """A resolution's answer: accepted (the next check merges it), tried again when
        the worker did not finish, or the run's conflict reported with why it stayed."""
        conflict = next(
            (self._conflict_text(r) for r in reversed(self.store.integrations(self.run_id))
             if conflict_of(r) is not None),
            "a conflict between phases",
        )  # fmt: skip
        try:
            resolved = judge_resolution(row, self.orchestrator.git)
        except MergeRetry as exc:
            self.store.settle_integration(row.key, "failed", str(exc))
            self._say("integration_retry", worker=row.worker, reason=str(exc))
            self.last_reason = str(exc)
            self.retries += 1
            if self.retries >= self.max_attempts:
                raise MergeFailed(f"{conflict}; {exc}") from exc
            return None
        except (MergeFailed, SuperagentError) as exc:
            self.store.settle_integration(row.key, "failed", str(exc))
            raise MergeFailed(f"{conflict}; {exc}") from exc
        self.store.settle_integration(row.key, "done")
        self._say("conflict_resolved", worker=row.worker, commit=resolved.commit)
        return None

    def _to_resolve_after(self, row: IntegrationRow) -> bool:
        """Whether this answered check is a conflict the next attempt resolves: one of a
        check holding every phase (a resolution merges them all)."""
        if conflict_of(row) is None or not self.orchestrator.spec.resolve_conflicts:
            return False
        if set(held(row)) != set(self.orchestrator.dag.order):
            return False
        return sum(map(is_resolution, self.store.integrations(self.run_id))) < MAX_RESOLUTIONS

    def _conflict_text(self, row: IntegrationRow) -> str:
        return conflict_reason(self.run_id, conflict_of(row) or {})

    def _done(self) -> dict[str, tuple[str, str]]:
        """The done phases at their accepted commits: what the merge queue may hold."""
        phases = self.store.phases(self.run_id)
        return {p: (r.branch, r.commit_sha or "") for p, r in phases.items() if r.state == "done"}

    def _commits(self) -> dict[str, tuple[str, str]]:
        phases = self.store.phases(self.run_id)
        open_phases = sorted(p for p, r in phases.items() if r.state != "done")
        if open_phases:
            raise UsageError(f"run {self.run_id} has phases not done: {', '.join(open_phases)}")
        return {p: (r.branch, r.commit_sha or "") for p, r in phases.items()}

    def _task(self, attempt: int, phases: tuple[str, ...]) -> IntegrationTask:
        """The check of the state holding `phases`: every phase, with the accepted
        resolution of their conflict merged last while it holds their commits."""
        commits = self._done()
        whole = set(phases) == set(self.orchestrator.dag.order)
        resolved = accepted_resolution(self.store.integrations(self.run_id)) if whole else None
        if resolved is not None and not self._resolves(commits):
            resolved = None  # a phase was redone since: the conflict is met again
        return integration_task(
            self.orchestrator.spec,
            self.run_id,
            attempt,
            commits,
            repo_url=self.orchestrator.repo_url,
            verify=self.verify,
            verify_timeout_s=self.verify_timeout_s,
            after=() if resolved is None else (resolved,),
            only=None if whole else phases,
        )

    def _resolves(self, commits: dict[str, tuple[str, str]]) -> bool:
        """Whether the newest accepted resolution merged the phases at these commits."""
        row = next(
            r for r in reversed(self.store.integrations(self.run_id))
            if is_resolution(r) and r.state == "done"
        )  # fmt: skip
        merged = {p.get("phase"): p.get("commit") for p in row.task.get("prerequisites") or []}
        return all(merged.get(p) == c for p, (_, c) in commits.items())

    def _open(self) -> IntegrationRow | None:
        """The attempt still under way from an earlier process (killed or interrupted)."""
        rows = self.store.integrations(self.run_id)
        return rows[-1] if rows and rows[-1].state in _OPEN else None

    def _reload(self, row: IntegrationRow | None) -> IntegrationRow | None:
        if row is None:
            return None
        return next(r for r in self.store.integrations(self.run_id) if r.key == row.key)

    def _send(self, row: IntegrationRow) -> IntegrationRow:
        """Enqueue (again: the key makes a repeat a no-op); on failure, retried next tick."""
        worker = self.orchestrator.workers.get(row.worker)
        if worker is None:
            return row
        try:
            # The worker merges each phase's branch at its accepted commit: a branch
            # moved since (a stale worker, a person) is put back first.
            self.orchestrator.repair_branches()
            sent = self.orchestrator.transports.enqueue(
                worker, row.task, key=row.key, max_attempts=QUEUE_MAX_ATTEMPTS
            )
        except SuperagentError as exc:
            log.warning("enqueue of %s on %s failed: %s", row.key, worker.name, exc)
            self._say("send_failed", worker=worker.name, reason=str(exc))
            return row
        self.store.settle_integration(row.key, "dispatched")
        self._say(
            "integration_dispatched",
            worker=worker.name,
            attempt=row.attempt,
            duplicate=sent.duplicate,
            checks=len(row.task.get("checks") or []),
            lacks=sorted(needs(self.orchestrator.spec, self.verify) - worker.capabilities) or None,
        )
        return self._reload(row) or row

    def _cancel(self, row: IntegrationRow) -> None:
        """Best effort: ask the lost worker's inbox to drop the abandoned check. Where the
        inbox cannot be reached, a late run only pushes to its own attempt ref."""
        worker = self.orchestrator.workers.get(row.worker)
        if worker is None:
            return
        try:
            self.orchestrator.transports.cancel(worker, row.key)
        except SuperagentError as exc:
            log.info("cancel of %s on %s not delivered: %s", row.key, row.worker, exc)

    def _judge(self, row: IntegrationRow) -> MergeResult:
        message: dict[str, Any] = row.response or {}
        task = IntegrationTask.from_payload(row.task)
        try:
            result = IntegrationResult.from_dict(message.get("response"))
        except UsageError:
            why = message.get("reason") or f"message {message.get('state')}"
            raise MergeRetry(f"the final check on {row.worker} did not finish: {why}") from None
        try:
            return judge(task, result, self.orchestrator.git)
        except MergeFailed:
            raise
        except SuperagentError as exc:
            raise MergeRetry(f"checking {task.branch} on the remote failed: {exc}") from exc

    def _say(self, kind: str, **data: Any) -> None:
        # through the orchestrator: the terminal, and the event stream (once)
        self.orchestrator.say(kind, **{k: v for k, v in data.items() if v is not None})
