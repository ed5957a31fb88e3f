"""What the inbox hands back: a message, a claim, a renewal, a finish, a heartbeat, the
drain flag and the counts of a poll.

NamedTuples, not dataclasses: immutable all the same, and `control queue rpc`
imports this module on every ansible call to every host, where `dataclasses` (and the
`inspect`, `ast` and `copy` it pulls in) and building eight classes with it cost more
than the rest of the rpc's start-up together. Not `typing.NamedTuple` either, at run
time: `typing` alone was a tenth of the rpc's start-up. Type checkers see
`typing.NamedTuple`; Python runs `Record`, which makes the same class of a body.
"""

from __future__ import annotations

import collections
import json
import sqlite3

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Any
    from typing import NamedTuple as Record
else:

    class _RecordType(type):
        """What `typing.NamedTuple` makes of a class body: a `collections.namedtuple` of
        its annotated fields, in order, their defaults, the body's docstring and methods;
        and, as it does, a refusal of a default before a field without one, or of a name
        namedtuple keeps for itself."""

        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> type:
            fields = tuple(namespace.get("__annotations__", {}))
            defaults = [namespace[f] for f in fields if f in namespace]
            if any(f in namespace for f in fields[: len(fields) - len(defaults)]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            for key in namespace.keys() & _OWN:
                raise AttributeError(f"{name}: cannot overwrite namedtuple's {key}")
            record = collections.namedtuple(
                name, fields, defaults=defaults, module=namespace["__module__"]
            )
            for key, value in namespace.items():
                if key not in fields and key not in ("__annotations__", "__qualname__"):
                    setattr(record, key, value)
            record.__annotations__ = dict(namespace.get("__annotations__", {}))
            return record

    # What typing.NamedTuple refuses to let a class body overwrite.
    _OWN = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                      "_field_defaults", "_make", "_replace", "_asdict", "_source"})  # fmt: skip

    Record = type.__new__(_RecordType, "Record", (), {})


class Enqueued(Record):
    """What `enqueue` tells the caller: the message id and whether it already existed
    (a key enqueued again is answered with its first message, never stored twice)."""

    id: int
    duplicate: bool
    state: str


class Claimed(Record):
    """A message a worker now holds under a lease; `fence` must accompany every later call."""

    id: int
    key: str | None
    kind: str
    fence: int
    attempt: int
    max_attempts: int
    payload: Any
    lease_expires_at: float


class Renewed(Record):
    """A renewed lease; `cancel_requested` tells the worker to stop the run."""

    lease_expires_at: float
    cancel_requested: bool


class Finished(Record):
    """Result of complete/fail: `accepted` is False when the fence was stale (the result
    is then kept apart in `stale_results`, never applied)."""

    accepted: bool
    state: str
    current_fence: int


class Message(Record):
    """A full row of the inbox, as `show`, `list` and `responses` return it."""

    id: int
    key: str | None
    content_hash: str
    kind: str
    payload: Any
    state: str
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    fence: int
    cancel_requested: bool
    enqueued_at: float
    claimed_at: float | None
    renewed_at: float | None
    finished_at: float | None
    response: Any
    acked_at: float | None
    reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Message:
        values = dict(row)
        values["payload"] = json.loads(values["payload"])
        values["response"] = (
            json.loads(values["response"]) if values["response"] is not None else None
        )
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class Heartbeat(Record):
    worker_id: str
    status: str
    current: list[Any]
    versions: dict[str, Any]
    reason: str | None
    beat_at: float

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class Drain(Record):
    """The inbox is drained: its worker claims nothing new; with `now`, it also hands
    back what it runs (the orchestrator reassigns it as a machine loss)."""

    now: bool
    reason: str | None
    since: float

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class Stats(Record):
    by_state: dict[str, int]
    unacked_responses: int
    stale_results: int
    reexecutions: int
    oldest_pending_age_s: float | None
    heartbeats: list[Heartbeat]

    def to_dict(self) -> dict[str, Any]:
        out = self._asdict()
        out["heartbeats"] = [beat.to_dict() for beat in self.heartbeats]
        return out
