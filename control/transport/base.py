"""The one interface every transport offers the orchestrator.

enqueue into one worker's inbox, poll many (responses, heartbeats, inbox stats)
in one fan-out, acknowledge stored responses, cancel by key. Each call speaks
the inbox's wire protocol (`control.rpc`), so the worker side is the same code
whatever carries the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, Unpack

from control.errors import (
    ConflictError,
    DrainedError,
    ExitCode,
    NotFoundError,
    SuperagentError,
    UsageError,
)
from control.inventory import Worker
from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from control.queue import Enqueued

# The worker role's defaults, from the same file the role reads.
DEFAULT_CONTROL = WORKER_CONTROL
DEFAULT_REMOTE_QUEUE = WORKER_QUEUE_DB


class TransportError(SuperagentError):
    """A worker could not be reached or did not answer the protocol."""


@dataclass
class PollResult:
    """One worker's answer to a poll; `reachable=False` carries the error instead."""

    worker: str
    reachable: bool
    error: str | None = None
    responses: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    # The inbox's state of each key the poll asked about (None: never seen there).
    known: dict[str, str | None] = field(default_factory=dict)
    # The inbox's clock when it answered (the worker machine's), to age heartbeats by.
    inbox_now: float | None = None
    # The inbox's drain flag ({"now", "reason", "since"}), None when not drained.
    drain: dict[str, Any] | None = None


class PollOptions(TypedDict, total=False):
    """What a poll asks besides its workers, written once for every transport and the
    router: at most `limit` responses (default 200; 0: none), those whose key starts
    with a `first` prefix before the others, and the inbox's state of `keys`."""

    limit: int
    first: Sequence[str]
    keys: Sequence[str]


class Transport(Protocol):
    name: str

    def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        """One protocol request to one worker; its answer, or the worker's error raised."""
        ...

    def enqueue(
        self,
        worker: Worker,
        payload: Any,
        *,
        key: str,
        max_attempts: int = 3,
        unless_drained: bool = False,
    ) -> Enqueued: ...

    def poll(
        self, workers: Sequence[Worker], **options: Unpack[PollOptions]
    ) -> dict[str, PollResult]: ...

    def ack(self, worker: Worker, ids: Sequence[int]) -> int: ...

    def cancel(self, worker: Worker, key: str) -> str: ...

    def drain(self, worker: Worker, *, now: bool = False, reason: str | None = None) -> Any: ...

    def undrain(self, worker: Worker) -> bool: ...

    def close(self) -> None: ...


class InboxCalls:
    """The protocol's requests, written once for every transport: a transport
    supplies `call` (one worker) and `poll_request` (one fan-out)."""

    def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def poll_request(
        self, workers: Sequence[Worker], request: dict[str, Any]
    ) -> dict[str, PollResult]:
        raise NotImplementedError

    def enqueue(
        self,
        worker: Worker,
        payload: Any,
        *,
        key: str,
        max_attempts: int = 3,
        unless_drained: bool = False,
    ) -> Enqueued:
        """Store `payload` under `key` in the worker's inbox; with `unless_drained`, a
        drained inbox refuses a new task (DrainedError)."""
        request = {"op": "enqueue", "payload": payload, "key": key, "max_attempts": max_attempts}
        if unless_drained:
            request["unless_drained"] = True
        answer = self.call(worker, request)
        return Enqueued(answer["id"], answer["duplicate"], answer["state"])

    def poll(
        self, workers: Sequence[Worker], **options: Unpack[PollOptions]
    ) -> dict[str, PollResult]:
        """Responses, heartbeats, stats, and each inbox's state of the keys asked about,
        from every worker in one fan-out (see `PollOptions`)."""
        request: dict[str, Any] = {"op": "poll", "limit": options.get("limit", 200)}
        if first := options.get("first"):
            request["first"] = list(first)
        if keys := options.get("keys"):
            request["keys"] = list(keys)
        return self.poll_request(workers, request) if workers else {}

    def ack(self, worker: Worker, ids: Sequence[int]) -> int:
        return int(self.call(worker, {"op": "ack", "ids": list(ids)})["acked"])

    def cancel(self, worker: Worker, key: str) -> str:
        return str(self.call(worker, {"op": "cancel", "key": key})["state"])

    def drain(self, worker: Worker, *, now: bool = False, reason: str | None = None) -> Any:
        """Set the worker's drain flag in its inbox; the flag as stored ({now, reason, since})."""
        return self.call(worker, {"op": "drain", "now": now, "reason": reason})["drain"]

    def undrain(self, worker: Worker) -> bool:
        """Clear the drain flag; whether it was set."""
        return bool(self.call(worker, {"op": "undrain"})["was_drained"])


def rpc_argv(worker: Worker) -> list[str]:
    """The command that answers the protocol on `worker`: its `control queue rpc` on its
    inbox (`superagent_control`, `superagent_queue_db`)."""
    control = _absolute(worker, "superagent_control", DEFAULT_CONTROL)
    return [control, "queue", "rpc", "--db", queue_path(worker)]


def queue_path(worker: Worker, default: str = DEFAULT_REMOTE_QUEUE) -> str:
    """Where the worker's inbox lives (`superagent_queue_db`), checked for sanity."""
    return _absolute(worker, "superagent_queue_db", default)


def _absolute(worker: Worker, variable: str, default: str) -> str:
    """The worker's `variable`, which must be an absolute path on one line."""
    value = str(worker.vars.get(variable) or default)
    if not value.startswith("/") or "\n" in value:
        raise UsageError(f"{worker.name}: {variable} must be an absolute path, not {value!r}")
    return value


_ERRORS: Mapping[int, type[SuperagentError]] = {
    int(ExitCode.USAGE): UsageError,
    int(ExitCode.NOT_FOUND): NotFoundError,
    int(ExitCode.CONFLICT): ConflictError,
}


def unwrap(worker: str, answer: Any) -> dict[str, Any]:
    """The protocol answer's body, or the worker's error raised as ours."""
    if not isinstance(answer, dict) or "ok" not in answer:
        raise TransportError(f"{worker}: not a protocol answer: {str(answer)[:200]}")
    if not answer["ok"]:
        error = (
            DrainedError
            if answer.get("drained")
            else _ERRORS.get(int(answer.get("code", 1)), TransportError)
        )
        raise error(f"{worker}: {answer.get('error', 'unknown error')}")
    return answer


def poll_result(worker: str, answer: dict[str, Any]) -> PollResult:
    return PollResult(
        worker=worker,
        reachable=True,
        responses=list(answer.get("responses", [])),
        heartbeats=list(answer.get("heartbeats", [])),
        stats=dict(answer.get("stats", {})),
        known=dict(answer.get("known", {})),
        inbox_now=float(answer["now"]) if isinstance(answer.get("now"), int | float) else None,
        drain=answer.get("drain") or None,
    )


def local_queue_path(worker: Worker) -> Path:
    return Path(queue_path(worker, default=""))
