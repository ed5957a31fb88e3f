"""What an operator does to the fleet and its runs, written once for every front that
offers it: the command line (`control health`, `enqueue`, `cancel`) and the Slack agent.

Each opens nothing it does not close and raises `control.errors` types; the fronts
render what it returns.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import NotFoundError, SuperagentError
from control.health import health_report
from control.inventory import Worker
from control.lifecycle import gone_hosts
from control.messages import FreeformTask
from control.state import RunRow, StateStore
from control.transport import Transports
from control.upkeep import collect_answers, deliver_cancels


@dataclass(frozen=True)
class FleetHealth:
    reports: list[dict[str, Any]]
    gone: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(not r["problems"] for r in self.reports)


def fleet_health(
    workers: Sequence[Worker], transports: Transports, state: Path | None
) -> FleetHealth:
    """Poll every worker once and judge each (`control.health`). On the way, with a state
    database (`state` names one that exists), store the answers to free-form tasks and
    deliver the cancels owed to workers, and list the hosts it holds state of that the
    inventory no longer has."""
    store = None
    gone: list[str] = []
    if state is not None and state.exists():
        store = StateStore(state)
    try:
        results = transports.poll(workers, limit=200 if store else 0, first=["freeform/"])
        if store is not None:
            fleet = {w.name: w for w in workers}
            gone = gone_hosts(store, fleet)
            for name, result in results.items():
                if result.reachable:
                    collect_answers(store, transports, fleet[name], result)
            deliver_cancels(store, transports, fleet, results)
    finally:
        if store is not None:
            store.close()
    now = time.time()
    return FleetHealth([health_report(w, results[w.name], now) for w in workers], gone)


@dataclass(frozen=True)
class FreeformReceipt:
    """Where a free-form task went: the worker, its key, its inbox id, and whether the
    inbox already held it."""

    worker: str
    key: str
    id: int
    duplicate: bool


def send_freeform(
    store: StateStore,
    transports: Transports,
    fleet: Mapping[str, Worker],
    host: str,
    text: str,
    agent: str = "claude-code",
    reply_to: Mapping[str, str] | None = None,
) -> FreeformReceipt:
    """A free-form task, `text` exactly as given, into one worker's inbox; recorded
    first, so its answer is stored by whichever poll sees it (and, with `reply_to`,
    posted back where the task came from)."""
    if host not in fleet:
        raise NotFoundError(f"no worker {host!r} in the inventory ({', '.join(sorted(fleet))})")
    payload = FreeformTask(text, agent={"backend": agent}).to_payload()
    key = f"freeform/{uuid.uuid4().hex}"
    store.record_freeform(key, host, reply_to)
    sent = transports.enqueue(fleet[host], payload, key=key, max_attempts=1)
    return FreeformReceipt(host, key, sent.id, sent.duplicate)


@dataclass(frozen=True)
class Cancelled:
    run: str
    cancelled: list[str]
    stopped: list[str]
    unstopped: list[str]


def cancel(
    store: StateStore,
    transports: Transports,
    fleet: Mapping[str, Worker],
    run: RunRow,
    phases: Sequence[str] | None,
    reason: str = "cancelled by the operator",
) -> Cancelled:
    """Cancel phases of `run` (none named: the whole run) and stop their agents on the
    workers that can be reached now."""
    # Recorded first, with a cancel owed to each worker: no liveness rule undoes it,
    # and what cannot be delivered now is delivered by a later tick or command.
    targets, owed = store.cancel_phases(run.id, phases or None, reason)
    stopped, unstopped = [], []
    for key in owed:
        attempt = store.attempt_by_key(key)
        worker = fleet.get(attempt.worker) if attempt else None
        try:
            if worker is None:
                raise SuperagentError("not in the inventory given")
            transports.cancel(worker, key)
        except SuperagentError:
            unstopped.append(key)
            continue
        store.mark_cancel_sent(key)
        stopped.append(key)
    return Cancelled(run.id, targets, stopped, unstopped)


def collect_answer(store: StateStore, transports: Transports, worker: Worker) -> int:
    """Poll one worker for the answers to free-form tasks and store them."""
    with contextlib.suppress(SuperagentError):
        result = transports.poll([worker], limit=200, first=["freeform/"])[worker.name]
        if result.reachable:
            return collect_answers(store, transports, worker, result)
    return 0
