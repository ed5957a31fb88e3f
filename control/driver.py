"""Drive a run (`control dispatch`): validate, create or resume the run, drive it to its end, merge.

The merge and its checks are the final check, done by a worker (`control.integration`).

Running the same command again resumes the latest run of that spec; a spec
whose content changed since is refused (the run would mix two plans) unless a
new run is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from control.accounts import from_workers
from control.errors import ConflictError, SuperagentError, UnavailableError, UsageError
from control.health import beat_of, claude_code_problem, fleet_pins
from control.integration import FinalCheck
from control.inventory import Worker
from control.merge import MergeFailed
from control.merge_queue import Reopened
from control.names import require_repo_url
from control.orchestrator import Emit, Orchestrator, RunOutcome, Settings
from control.spec import Spec, load_spec
from control.state import StateStore
from control.transport import Transports


def spec_hash(spec: Spec) -> str:
    """The digest a resume compares: the spec's content with every field left at its
    default omitted, so that a later superagent adding a spec field (with a default)
    still resumes the runs its predecessor started from the same file."""
    return _digest(_set_fields(spec) | {"path": None})


def legacy_spec_hash(spec: Spec) -> str:
    """The digest superagent took before it left defaults out (every field hashed): a
    run started then resumes as long as no spec field was added since."""
    return _digest(spec.to_dict() | {"path": None})


def _digest(document: Any) -> str:
    body = json.dumps(document, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _set_fields(value: Any) -> Any:
    """`value` as JSON-ready data, each dataclass without the fields at their default."""
    if is_dataclass(value) and not isinstance(value, type):
        kept = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if f.default is not MISSING and item == f.default:
                continue
            if f.default_factory is not MISSING and item == f.default_factory():
                continue
            kept[f.name] = _set_fields(item)
        return kept
    if isinstance(value, (list, tuple)):
        return [_set_fields(v) for v in value]
    if isinstance(value, dict):
        return {k: _set_fields(v) for k, v in value.items()}
    return value


@dataclass
class RunDriver:
    """One `control dispatch`: the orchestrator, its store, and how to end."""

    orchestrator: Orchestrator
    store: StateStore
    run_id: str
    resumed: bool
    merge: bool = True
    verify_merge: bool = True
    # This process as the run's one live driver, taken by `open_run`.
    lease: DriverLease | None = None

    def drive(
        self,
        stop: threading.Event | None = None,
        *,
        timeout_s: float | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> RunOutcome:
        """Tick until the run ends (or `stop` is set, or the timeout passes), as the
        run's one live driver: the lease taken by `open_run` is renewed every tick
        and given up at the end."""
        orchestrator = self.orchestrator
        stop = stop or threading.Event()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        queue = self._merge_queue()
        try:
            while True:
                self._renew_driver()
                outcome = orchestrator.outcome()
                if outcome is not None:
                    finished = self._finish(outcome, stop, deadline)
                    if finished is not None:
                        return finished
                    continue  # the merge queue reopened a phase: the run goes on
                if stop.is_set():
                    raise KeyboardInterrupt
                if deadline is not None and time.monotonic() > deadline:
                    reason = f"timed out after {timeout_s:g}s with phases still open"
                    self.store.finish_run(self.run_id, "failed", reason)
                    phases = self.store.phases(self.run_id)
                    return RunOutcome(self.run_id, "failed", phases, reason)
                if queue is None:
                    orchestrator.tick()
                elif (failed := self._queue_step(queue)) is not None:
                    return failed
                if on_tick is not None:
                    on_tick()
                if orchestrator.outcome() is None:
                    stop.wait(orchestrator.settings.poll_interval_s)
        finally:
            if self.lease is not None:
                self.lease.release()

    def _merge_queue(self) -> FinalCheck | None:
        """The merge queue while phases run (`control.merge_queue`): accepted phases
        merged and checked on spare slots as they come. None when the run is not merged
        here, not verified, or its spec turns the queue off."""
        if not (self.merge and self.verify_merge and self.orchestrator.spec.merge_queue):
            return None
        return FinalCheck(self.orchestrator, during_run=True)

    def _queue_step(self, queue: FinalCheck) -> RunOutcome | None:
        """One tick with the merge queue's step; the failed run when a phase broke the
        integration more often than its feedback rounds allow."""
        try:
            queue.step()
        except MergeFailed as exc:
            self.store.finish_run(self.run_id, "failed", str(exc))
            self.orchestrator.say("merge_failed", reason=str(exc))
            return RunOutcome(self.run_id, "failed", self.store.phases(self.run_id), str(exc))
        return None

    def _renew_driver(self) -> None:
        if self.lease is not None:
            self.lease.renew()

    def _finish(
        self, outcome: RunOutcome, stop: threading.Event, deadline: float | None
    ) -> RunOutcome | None:
        """The run's end: its final check (the merge queue's last state) when every phase
        is done; None when the queue reopened a phase that breaks the integration."""
        run = self.store.run(self.run_id)
        if run.status == "cancelled":  # `control cancel` ended it while we ran
            return RunOutcome(self.run_id, "cancelled", outcome.phases, run.reason, outcome.dead)
        # Cancels owed to workers (abandoned attempts) are delivered now where they can
        # be; what cannot is delivered by a later run or `control health`.
        self.orchestrator.deliver_cancels()
        if outcome.status == "done" and self.merge and run.merge_commit is None:
            try:
                merged = FinalCheck(self.orchestrator, verify=self.verify_merge).run(
                    stop, deadline=deadline, on_step=self._renew_driver
                )
            except MergeFailed as exc:
                self.store.finish_run(self.run_id, "failed", str(exc))
                self.orchestrator.say("merge_failed", reason=str(exc))
                return RunOutcome(self.run_id, "failed", outcome.phases, str(exc))
            if isinstance(merged, Reopened):
                return None
        if run.status != outcome.status:
            self.store.finish_run(self.run_id, outcome.status, outcome.reason)
        return outcome


def open_run(
    spec_path: Path,
    workers: Sequence[Worker],
    state_path: Path,
    *,
    new_run: bool = False,
    settings: Settings | None = None,
    repo_url: str | None = None,
    agent: dict[str, Any] | None = None,
    replay_dir: Path | None = None,
    transports: Transports | None = None,
    emit: Emit | None = None,
    merge: bool = True,
    budget_usd: float | None = None,
) -> RunDriver:
    """Validate, then create a run or resume the latest one of this spec.

    `budget_usd` (`--budget`) overrides the spec's; given on a resume, it replaces the
    run's (a run stopped by its budget goes on with a raised one).
    """
    if not workers:
        raise UsageError("no workers: the inventory has no host in group `workers`")
    if repo_url is not None:
        require_repo_url(repo_url, "--repo")
    spec = load_spec(spec_path, workers)
    accounts = from_workers(workers)
    transports = transports or Transports()
    try:
        check_claude_code(
            spec,
            workers,
            transports,
            agent,
            accounts=any(a.agent == "claude-code" for a in accounts),
        )
    except SuperagentError:
        transports.close()
        raise
    retention = retention_days()
    store = StateStore(state_path)
    if retention > 0:
        store.gc(retention)  # the automatic policy: a year of history stays fast
    key = str(spec_path.resolve())
    digest = spec_hash(spec)
    latest = None if new_run else store.latest_run(key)
    if latest is not None and latest.spec_hash not in (digest, legacy_spec_hash(spec)):
        store.close()
        raise ConflictError(
            f"{spec_path} changed since run {latest.id}; resume it with the old spec or "
            "start over with --new-run"
        )
    if latest is None:
        document = spec.to_dict()
        if repo_url is not None:  # `control merge` later builds on the remote the run used
            document["repo"]["url"] = repo_url
        run_id = store.create_run(
            key,
            digest,
            document,
            [(p.id, p.branch) for p in spec.phases],
            pins=fleet_pins(workers),
            budget_usd=budget_usd if budget_usd is not None else spec.budget_usd,
        )
        resumed = False
    else:
        run_id, resumed = latest.id, True
    lease = DriverLease(store, run_id, driver_ttl(settings or Settings()))
    try:
        lease.acquire()
    except ConflictError:
        store.close()
        raise
    if latest is not None and budget_usd is not None and budget_usd != latest.budget_usd:
        store.set_budget(run_id, budget_usd)
    if latest is not None and latest.status == "failed":
        store.reopen_run(run_id)
    orchestrator = Orchestrator(
        spec,
        workers,
        store,
        transports,
        settings,
        repo_url=repo_url,
        agent=agent,
        replay_dir=replay_dir,
        emit=emit,
        accounts=accounts,
    )
    orchestrator.attach(run_id)
    if resumed:  # stored, not printed: the command says it resumes in its own words
        store.event(run_id, "run_resumed", detail={"spec": key})
    return RunDriver(orchestrator, store, run_id, resumed, merge=merge, lease=lease)


DEFAULT_RETENTION_DAYS = 180.0


def retention_days() -> float:
    """How long finished runs keep their details: $SUPERAGENT_RETENTION_DAYS (0: forever)."""
    value = os.environ.get("SUPERAGENT_RETENTION_DAYS", "")
    if not value:
        return DEFAULT_RETENTION_DAYS
    try:
        days = float(value)
    except ValueError:
        raise UsageError(
            f"SUPERAGENT_RETENTION_DAYS must be a number of days, not {value!r}"
        ) from None
    if days < 0:
        raise UsageError(f"SUPERAGENT_RETENTION_DAYS must be >= 0, not {value!r}")
    return days


def driver_identity() -> dict[str, Any]:
    """Who drives a run: this host and process, and a token only this process holds."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": secrets.token_hex(8),
        "since": time.time(),
    }


def check_claude_code(
    spec: Spec,
    workers: Sequence[Worker],
    transports: Transports,
    agent: dict[str, Any] | None = None,
    *,
    accounts: bool = False,
) -> None:
    """Before a run starts: some live worker that may be sent a Claude Code phase has
    `claude` and a credential, so a fleet where none has is one clear line now and not
    a run that waits. UnavailableError names each host and what to do. (With one fit
    worker the run starts: the scheduler sends Claude Code phases only to workers whose
    heartbeat reports both, and says in `status` why a phase waits.)

    One poll of the fleet, only when some phase runs Claude Code; a worker that cannot
    be reached or has never beaten is left to the run's own liveness. With Claude Code
    `accounts` in the inventory, credentials are the accounts' (the scheduler sends a
    phase only where one is usable): only `claude` itself is checked."""
    backend = (agent or {}).get("backend")
    needs = [p.requires for p in spec.phases if (backend or p.agent.backend) == "claude-code"]
    capable = [w for w in workers if any(set(r) <= w.capabilities for r in needs)]
    if not capable:
        return
    results = transports.poll(capable, limit=0)
    problems = []
    fit = 0
    for worker in capable:
        result = results.get(worker.name)
        beat = beat_of(worker.name, result) if result is not None and result.reachable else None
        versions = dict((beat or {}).get("versions") or {})
        if accounts:
            versions.pop("claude_auth", None)
        problem = claude_code_problem(versions)
        if problem is not None:
            problems.append(f"{worker.name}: {problem}")
        elif beat is not None:
            fit += 1
    if problems and not fit:
        raise UnavailableError(
            "Claude Code cannot run on "
            + "; ".join(problems)
            + " (fix it, take the host out of the inventory, or choose another --agent)"
        )


class DriverLease:
    """This process as a run's one live driver (a lease in the state database: see
    `StateStore.acquire_driver`): `control dispatch` and `control merge` both hold it, so
    a merge never races a dispatch of the same run. A context manager, or acquire,
    renew (every tick) and release."""

    def __init__(self, store: StateStore, run_id: str, ttl_s: float) -> None:
        self.store = store
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.holder = driver_identity()

    def acquire(self) -> None:
        """ConflictError, naming the live driver, when another process drives the run."""
        self.store.acquire_driver(self.run_id, self.holder, self.ttl_s)

    def renew(self) -> None:
        if not self.store.renew_driver(self.run_id, self.holder["token"], self.ttl_s):
            raise ConflictError(
                f"run {self.run_id}: another orchestrator took it over; this one stops"
            )

    def release(self) -> None:
        self.store.release_driver(self.run_id, self.holder["token"])

    def __enter__(self) -> DriverLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def driver_ttl(settings: Settings) -> float:
    """How long a driver's lease lasts without renewal: several ticks, 30 s at least."""
    return max(30.0, 10 * settings.poll_interval_s)
