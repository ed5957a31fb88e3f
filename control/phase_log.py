"""A phase attempt's log, fetched from the worker that ran it through its transport:
one home for `control logs` and the web dashboard's streaming log tail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.errors import NotFoundError
from control.inventory import Worker
from control.state import AttemptRow, StateStore
from control.transport import Transports


def sent_attempt(store: StateStore, run_id: str, phase: str, attempt: int | None) -> AttemptRow:
    """The attempt `attempt` of a phase (default: its last) that reached a worker's inbox;
    NotFoundError saying which attempts exist when there is none."""
    store.named_phases(run_id, [phase])
    sent = [a for a in store.attempts(run_id, phase) if a.message_id is not None]
    chosen = [a for a in sent if attempt is None or a.attempt == attempt]
    if not chosen:
        which = "" if attempt is None else f" {attempt}"
        exist = ", ".join(str(a.attempt) for a in sent)
        raise NotFoundError(
            f"run {run_id}: phase {phase!r} has no dispatched attempt{which}"
            + (f" (its attempts: {exist})" if exist else " (it was never sent to a worker)")
        )
    return chosen[-1]


def fetch_log(
    transports: Transports,
    fleet: Mapping[str, Worker],
    attempt: AttemptRow,
    tail_bytes: int,
) -> dict[str, Any]:
    """The end of the attempt's log on its worker: {path, size, state, text}.

    The text is the agent's and the verify commands' output: hostile, for a reader to
    show only as data."""
    worker = fleet.get(attempt.worker)
    if worker is None:
        raise NotFoundError(f"worker {attempt.worker!r} is not in the inventory")
    answer = transports.call(
        worker, {"op": "log", "id": attempt.message_id, "tail_bytes": tail_bytes}
    )
    return {k: answer[k] for k in ("path", "size", "state", "text")}
