"""The worker inbox: one SQLite file per machine that never loses or doubles a task.

The orchestrator enqueues (idempotent by key), the worker claims under a lease
and a fence token, renews while it works and completes; the orchestrator reads
the responses and acknowledges them in a separate step. This is the only queue
implementation: the worker, the CLI, the transports and the benchmarks use it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from control import db
from control.errors import ConflictError, NotFoundError, UsageError

Kind = Literal["task", "cancel"]
KINDS: tuple[str, ...] = ("task", "cancel")
STATES: tuple[str, ...] = ("pending", "claimed", "done", "failed", "dead", "cancelled")
FINISHED_STATES: tuple[str, ...] = ("done", "failed", "dead", "cancelled")

DEFAULT_DUPLICATE_WINDOW_S = 600.0
DEFAULT_MAX_ATTEMPTS = 3
MAX_KEY_LENGTH = 512

_MIGRATIONS: tuple[str, ...] = (
    # 1: messages, heartbeats, stale results
    """
    CREATE TABLE messages (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused
        key              TEXT UNIQUE,
        content_hash     TEXT NOT NULL,
        kind             TEXT NOT NULL DEFAULT 'task' CHECK (kind IN ('task', 'cancel')),
        payload          TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                             ('pending', 'claimed', 'done', 'failed', 'dead', 'cancelled')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_owner      TEXT,
        lease_expires_at REAL,
        fence            INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        enqueued_at      REAL NOT NULL,
        claimed_at       REAL,
        renewed_at       REAL,
        finished_at      REAL,
        response         TEXT,
        acked_at         REAL,
        reason           TEXT
    );
    CREATE INDEX messages_pending ON messages (id) WHERE state = 'pending' AND kind = 'task';
    CREATE INDEX messages_leases ON messages (lease_expires_at) WHERE state = 'claimed';
    CREATE INDEX messages_content ON messages (content_hash, enqueued_at);
    -- The predicate names the two unfinished states, not the four finished ones: an IN
    -- list of four made every write that touches `state` cost ~3x (measured).
    CREATE INDEX messages_unacked ON messages (finished_at)
        WHERE acked_at IS NULL AND state NOT IN ('pending', 'claimed');
    CREATE TABLE stale_results (
        id          INTEGER PRIMARY KEY,
        message_id  INTEGER NOT NULL,
        fence       INTEGER NOT NULL,
        outcome     TEXT NOT NULL,
        response    TEXT,
        reason      TEXT,
        received_at REAL NOT NULL
    );
    CREATE TABLE heartbeats (
        worker_id TEXT PRIMARY KEY,
        status    TEXT NOT NULL,
        current   TEXT NOT NULL DEFAULT '[]',
        versions  TEXT NOT NULL DEFAULT '{}',
        reason    TEXT,
        beat_at   REAL NOT NULL
    );
    """,
    # 2: the drain flag: an operator's "take no new work" kept in the inbox itself, so
    # it holds across restarts of the worker and travels through the same protocol.
    """
    CREATE TABLE drain (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        now    INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        since  REAL NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def canonical_json(value: Any) -> str:
    """The one serialisation used for hashing and storage: keys sorted, no spaces."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"not representable as JSON: {exc}") from exc


def content_hash(kind: str, payload: Any) -> str:
    return hashlib.sha256(f"{kind}\n{canonical_json(payload)}".encode()).hexdigest()


@dataclass(frozen=True)
class Enqueued:
    """What `enqueue` tells the caller: the message id and whether it already existed."""

    id: int
    duplicate: bool
    state: str


@dataclass(frozen=True)
class Claimed:
    """A message a worker now holds under a lease; `fence` must accompany every later call."""

    id: int
    key: str | None
    kind: str
    fence: int
    attempt: int
    max_attempts: int
    payload: Any
    lease_expires_at: float


@dataclass(frozen=True)
class Renewed:
    """A renewed lease; `cancel_requested` tells the worker to stop the run."""

    lease_expires_at: float
    cancel_requested: bool


@dataclass(frozen=True)
class Finished:
    """Result of complete/fail: `accepted` is False when the fence was stale."""

    accepted: bool
    state: str
    current_fence: int


@dataclass(frozen=True)
class Message:
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
        return dict(self.__dict__)


@dataclass(frozen=True)
class Heartbeat:
    worker_id: str
    status: str
    current: list[Any]
    versions: dict[str, Any]
    reason: str | None
    beat_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Drain:
    """The inbox is drained: its worker claims nothing new; with `now`, it also hands
    back what it runs (the orchestrator reassigns it as a machine loss)."""

    now: bool
    reason: str | None
    since: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Stats:
    by_state: dict[str, int]
    unacked_responses: int
    stale_results: int
    reexecutions: int
    oldest_pending_age_s: float | None
    heartbeats: list[Heartbeat] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["heartbeats"] = [beat.to_dict() for beat in self.heartbeats]
        return out


def _check_key(key: str | None) -> None:
    if key is None:
        return
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise UsageError(
            f"idempotency key must be 1-{MAX_KEY_LENGTH} printable characters, got {key!r:.80}"
        )


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"{name} must be positive, got {value}")


class Queue:
    """One worker inbox (`queue.db`). Safe to share between threads of one process.

    `sync` sets the durability of the commits that must survive a power cut
    (enqueue, complete, fail, cancel, ack): "full" (the default) or "normal".
    Claims, renewals and heartbeats always commit with NORMAL: losing one to a
    power cut only makes the work run again, and the fence keeps that safe.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        create: bool = True,
        sync: db.Synchronous = "full",
        busy_timeout_s: float = db.DEFAULT_BUSY_TIMEOUT_S,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sync not in ("full", "normal"):
            raise UsageError(f"sync must be 'full' or 'normal', got {sync!r}")
        self.path = Path(path)
        self.sync: db.Synchronous = sync
        self.duplicate_window_s = duplicate_window_s
        self._busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = db.connect(
            self.path,
            create=create,
            busy_timeout_s=busy_timeout_s,
            what="inbox",
            create_hint="create it with `control queue init --db PATH`",
        )
        try:
            db.migrate(self._conn, _MIGRATIONS, what=f"inbox {self.path}")
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing -------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, durable: bool) -> Any:
        return db.write_transaction(
            self._conn, self.sync if durable else "normal", self._busy_timeout_s
        )

    def _row(self, message_id: int) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no message {message_id}")
        return row  # type: ignore[no-any-return]

    # -- producer side ----------------------------------------------------------

    def enqueue(
        self,
        payload: Any,
        *,
        key: str | None = None,
        kind: Kind = "task",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        allow_duplicate: bool = False,
    ) -> Enqueued:
        """Store a message, or return the one already stored for it.

        With a key: the same key returns the existing message (`duplicate=True`)
        forever; the same key with different content is a conflict. Without a
        key: identical content enqueued within `duplicate_window_s` is skipped
        as a duplicate unless `allow_duplicate` is set.
        """
        _check_key(key)
        if kind not in KINDS:
            raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise UsageError(f"max_attempts must be a positive integer, got {max_attempts!r}")
        body = canonical_json(payload)
        digest = content_hash(kind, payload)
        with self._lock, self._write(durable=True) as conn:
            now = self._clock()
            if key is not None:
                row = conn.execute(
                    "SELECT id, content_hash, state, kind FROM messages WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    if row["content_hash"] != digest and row["kind"] != "cancel":
                        raise ConflictError(
                            f"idempotency key {key!r} already holds message {row['id']} "
                            "with different content"
                        )
                    return Enqueued(row["id"], True, row["state"])
            elif not allow_duplicate:
                row = conn.execute(
                    "SELECT id, state FROM messages WHERE content_hash = ? AND enqueued_at >= ? "
                    "ORDER BY id DESC LIMIT 1",
                    (digest, now - self.duplicate_window_s),
                ).fetchone()
                if row is not None:
                    return Enqueued(row["id"], True, row["state"])
            cursor = conn.execute(
                "INSERT INTO messages (key, content_hash, kind, payload, max_attempts, "
                "enqueued_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, digest, kind, body, max_attempts, now),
            )
            return Enqueued(int(cursor.lastrowid or 0), False, "pending")

    def cancel(self, message_id: int | None = None, *, key: str | None = None) -> str:
        """Cancel by id or key; returns the state afterwards.

        Pending: cancelled at once. Claimed: flagged, and the worker learns it on
        its next renew. Finished: unchanged. A key that is not in the inbox yet
        gets a `cancel` tombstone, so an enqueue arriving late is never run.
        """
        if (message_id is None) == (key is None):
            raise UsageError("cancel needs exactly one of a message id or a key")
        _check_key(key)
        with self._lock, self._write(durable=True) as conn:
            now = self._clock()
            if key is not None:
                row = conn.execute("SELECT id FROM messages WHERE key = ?", (key,)).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO messages (key, content_hash, kind, payload, state, "
                        "max_attempts, enqueued_at, finished_at, reason) "
                        "VALUES (?, '', 'cancel', 'null', 'cancelled', 1, ?, ?, ?)",
                        (key, now, now, "cancelled before it was enqueued"),
                    )
                    return "cancelled"
                message_id = int(row["id"])
            row = self._row(int(message_id))  # type: ignore[arg-type]
            if row["state"] == "pending":
                conn.execute(
                    "UPDATE messages SET state = 'cancelled', finished_at = ?, reason = ? "
                    "WHERE id = ?",
                    (now, "cancelled while pending", row["id"]),
                )
                return "cancelled"
            if row["state"] == "claimed":
                conn.execute("UPDATE messages SET cancel_requested = 1 WHERE id = ?", (row["id"],))
            return str(row["state"])

    # -- worker side --------------------------------------------------------------

    def _expire_leases(self, conn: sqlite3.Connection, now: float) -> int:
        """Put back every claimed message whose lease has run out (inside a write)."""
        expired = conn.execute(
            "SELECT id, attempts, max_attempts, lease_owner, cancel_requested FROM messages "
            "WHERE state = 'claimed' AND lease_expires_at < ?",
            (now,),
        ).fetchall()
        for row in expired:
            owner = row["lease_owner"]
            if row["cancel_requested"]:
                state, reason = "cancelled", f"cancelled; lease of {owner} expired"
            elif row["attempts"] >= row["max_attempts"]:
                state = "dead"
                reason = (
                    f"lease expired on attempt {row['attempts']} of {row['max_attempts']} "
                    f"(last owner {owner})"
                )
            else:
                state, reason = "pending", f"lease of {owner} expired on attempt {row['attempts']}"
            conn.execute(
                "UPDATE messages SET state = ?, reason = ?, lease_owner = NULL, "
                "lease_expires_at = NULL, finished_at = CASE WHEN ? = 'pending' THEN NULL "
                "ELSE ? END WHERE id = ?",
                (state, reason, state, now, row["id"]),
            )
        return len(expired)

    def requeue_expired(self) -> int:
        """Sweep expired leases now (claims also do this); returns how many moved."""
        with self._lock, self._write(durable=True) as conn:
            return self._expire_leases(conn, self._clock())

    def claim(self, worker_id: str, lease_seconds: float) -> Claimed | None:
        """Take the oldest pending task under a lease, or None when there is none."""
        if not worker_id or not worker_id.isprintable():
            raise UsageError(f"worker id must be printable and non-empty, got {worker_id!r}")
        _check_positive("lease_seconds", lease_seconds)
        with self._lock:
            # Expiry can end a message (dead, cancelled): those transitions are as
            # durable as a completion, so they commit FULL on their own first.
            self._expire_dead_leases_for_read()
        with self._lock, self._write(durable=False) as conn:
            now = self._clock()
            row = conn.execute(
                "UPDATE messages SET state = 'claimed', lease_owner = ?, lease_expires_at = ?, "
                "attempts = attempts + 1, fence = fence + 1, claimed_at = ?, renewed_at = ? "
                "WHERE id = (SELECT id FROM messages WHERE state = 'pending' AND kind = 'task' "
                "ORDER BY id LIMIT 1) "
                "RETURNING id, key, kind, fence, attempts, max_attempts, payload, "
                "lease_expires_at",
                (worker_id, now + lease_seconds, now, now),
            ).fetchone()
        if row is None:
            return None
        return Claimed(
            id=row["id"],
            key=row["key"],
            kind=row["kind"],
            fence=row["fence"],
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            payload=json.loads(row["payload"]),
            lease_expires_at=row["lease_expires_at"],
        )

    def has_work(self) -> bool:
        """Is there a task to claim (pending, or claimed under a lease that ran out)?

        Read-only on purpose: a worker woken by inotify looks before it claims, so
        its own look does not write the WAL and wake every watcher again.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE state = 'pending' AND kind = 'task') "
                "OR EXISTS (SELECT 1 FROM messages WHERE state = 'claimed' "
                "AND lease_expires_at < ?)",
                (self._clock(),),
            ).fetchone()
        return bool(row[0])

    def next_lease_expiry(self) -> float | None:
        """When the earliest current lease runs out (a dead worker's message is claimable
        then, and no write announces it): the worker's wait ends there at the latest."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(lease_expires_at) FROM messages WHERE state = 'claimed'"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def now(self) -> float:
        """This inbox's clock (the worker machine's): a poll answers with it, so the
        age of a heartbeat is read on the clock that wrote it."""
        return float(self._clock())

    def data_version(self) -> int:
        """Changes whenever another connection commits to the inbox (PRAGMA data_version)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def renew(self, message_id: int, fence: int, lease_seconds: float) -> Renewed:
        """Extend the lease if `fence` is still current; raises ConflictError otherwise."""
        _check_positive("lease_seconds", lease_seconds)
        with self._lock, self._write(durable=False) as conn:
            now = self._clock()
            row = conn.execute(
                "UPDATE messages SET lease_expires_at = ?, renewed_at = ? "
                "WHERE id = ? AND fence = ? AND state = 'claimed' "
                "RETURNING lease_expires_at, cancel_requested",
                (now + lease_seconds, now, message_id, fence),
            ).fetchone()
            if row is None:
                current = self._row(message_id)
                raise ConflictError(
                    f"message {message_id}: fence {fence} is not current "
                    f"(state {current['state']}, fence {current['fence']}); the lease is lost"
                )
        return Renewed(row["lease_expires_at"], bool(row["cancel_requested"]))

    def release(self, message_id: int, fence: int, reason: str) -> bool:
        """Give a claimed message back to pending (clean shutdown); the attempt still counts."""
        with self._lock, self._write(durable=True) as conn:
            row = conn.execute(
                "UPDATE messages SET state = CASE WHEN cancel_requested THEN 'cancelled' "
                "ELSE 'pending' END, finished_at = CASE WHEN cancel_requested THEN ? END, "
                "lease_owner = NULL, lease_expires_at = NULL, reason = ? "
                "WHERE id = ? AND fence = ? AND state = 'claimed' RETURNING id",
                (self._clock(), reason, message_id, fence),
            ).fetchone()
        return row is not None

    def release_expired_of(self, worker_id: str) -> int:
        """On worker start: put back this worker's own claims whose lease ran out."""
        with self._lock, self._write(durable=True) as conn:
            now = self._clock()
            mine = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE state = 'claimed' AND lease_owner = ? "
                "AND lease_expires_at < ?",
                (worker_id, now),
            ).fetchone()[0]
            if mine:
                self._expire_leases(conn, now)
            return int(mine)

    def complete(self, message_id: int, fence: int, response: Any) -> Finished:
        """Store the result as done if `fence` is current; otherwise record it as stale."""
        return self._finish(message_id, fence, "done", response, None)

    def fail(self, message_id: int, fence: int, reason: str, response: Any = None) -> Finished:
        """Store a failure (or `cancelled`, when a cancel was requested) if `fence` is current."""
        if not reason:
            raise UsageError("a failure needs a reason")
        return self._finish(message_id, fence, "failed", response, reason)

    def _finish(
        self, message_id: int, fence: int, outcome: str, response: Any, reason: str | None
    ) -> Finished:
        body = canonical_json(response) if response is not None else None
        with self._lock, self._write(durable=True) as conn:
            now = self._clock()
            row = conn.execute(
                "UPDATE messages SET state = CASE WHEN ? = 'failed' AND cancel_requested "
                "THEN 'cancelled' ELSE ? END, response = ?, reason = ?, finished_at = ?, "
                "lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = ? AND fence = ? AND state = 'claimed' RETURNING state, fence",
                (outcome, outcome, body, reason, now, message_id, fence),
            ).fetchone()
            if row is not None:
                return Finished(True, row["state"], row["fence"])
            current = self._row(message_id)
            conn.execute(
                "INSERT INTO stale_results (message_id, fence, outcome, response, reason, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?)",
                (message_id, fence, outcome, body, reason, now),
            )
            return Finished(False, current["state"], current["fence"])

    def beat(
        self,
        worker_id: str,
        status: str,
        *,
        current: Iterable[Any] = (),
        versions: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        """Record the worker's heartbeat: what it runs, its versions, why it refuses work."""
        with self._lock, self._write(durable=False) as conn:
            conn.execute(
                "INSERT INTO heartbeats (worker_id, status, current, versions, reason, beat_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker_id) DO UPDATE SET "
                "status = excluded.status, current = excluded.current, "
                "versions = excluded.versions, reason = excluded.reason, "
                "beat_at = excluded.beat_at",
                (
                    worker_id,
                    status,
                    canonical_json(list(current)),
                    canonical_json(versions or {}),
                    reason,
                    self._clock(),
                ),
            )

    # -- drain ------------------------------------------------------------------------

    def drain(self, *, now: bool = False, reason: str | None = None) -> Drain:
        """Stop this inbox's worker claiming new work (and, with `now`, running any).

        Draining again keeps the first `since`; `now` only ever escalates, so a plain
        drain after a `--now` one does not bring back a run already handed back.
        """
        with self._lock, self._write(durable=True) as conn:
            row = conn.execute(
                "INSERT INTO drain (id, now, reason, since) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET now = MAX(now, excluded.now), "
                "reason = COALESCE(excluded.reason, reason) RETURNING now, reason, since",
                (int(now), reason, self._clock()),
            ).fetchone()
        return Drain(bool(row["now"]), row["reason"], float(row["since"]))

    def undrain(self) -> bool:
        """Let the worker claim again; False when it was not drained."""
        with self._lock, self._write(durable=True) as conn:
            return conn.execute("DELETE FROM drain RETURNING id").fetchone() is not None

    def drained(self) -> Drain | None:
        with self._lock:
            row = self._conn.execute("SELECT now, reason, since FROM drain").fetchone()
        return None if row is None else Drain(bool(row["now"]), row["reason"], float(row["since"]))

    # -- orchestrator side ----------------------------------------------------------

    def responses(self, limit: int | None = None, *, first: Iterable[str] = ()) -> list[Message]:
        """Finished messages whose response the orchestrator has not acknowledged yet.

        Those whose key starts with `first[0]` come first, then `first[1]`'s, and so
        on, then all others: a reader always reaches its own responses however many
        others wait unread (another run's, an operator's) and fill the window.
        """
        prefixes = [p for p in first if p]
        rank = "".join(
            f"WHEN substr(key, 1, {len(p)}) = ? THEN {i} " for i, p in enumerate(prefixes)
        )
        order = f"CASE {rank}ELSE {len(prefixes)} END, " if prefixes else ""
        with self._lock:
            self._expire_dead_leases_for_read()
            rows = self._conn.execute(
                "SELECT * FROM messages WHERE acked_at IS NULL AND state NOT IN "
                f"('pending', 'claimed') ORDER BY {order}finished_at, id LIMIT ?",
                [*prefixes, -1 if limit is None else limit],
            ).fetchall()
        return [Message.from_row(row) for row in rows]

    def known(self, keys: Iterable[str]) -> dict[str, str | None]:
        """The state of each key in this inbox (None: the inbox has never seen it).

        The orchestrator asks this of the keys it believes a worker holds: a key the
        inbox does not know (a re-created inbox, a lost enqueue) is re-dispatched at once
        instead of waiting in flight forever. An acknowledged message reads `acked`.
        """
        out: dict[str, str | None] = {}
        with self._lock:
            for key in keys:
                row = self._conn.execute(
                    "SELECT state, kind, acked_at FROM messages WHERE key = ?", (key,)
                ).fetchone()
                if row is None:
                    out[key] = None
                elif row["acked_at"] is not None and row["kind"] == "task":
                    out[key] = "acked"
                else:
                    out[key] = str(row["state"])
        return out

    def _expire_dead_leases_for_read(self) -> None:
        """Let a poll see leases that ran out even when no worker is left to claim."""
        now = self._clock()
        expired = self._conn.execute(
            "SELECT 1 FROM messages WHERE state = 'claimed' AND lease_expires_at < ? LIMIT 1",
            (now,),
        ).fetchone()
        if expired is not None:
            with self._write(durable=True) as conn:
                self._expire_leases(conn, self._clock())

    def ack(self, *message_ids: int) -> int:
        """Mark responses as stored by the orchestrator; idempotent. Returns how many."""
        if not message_ids:
            return 0
        with self._lock, self._write(durable=True) as conn:
            now = self._clock()
            for message_id in message_ids:
                row = self._row(message_id)
                if row["state"] not in FINISHED_STATES:
                    raise ConflictError(
                        f"message {message_id} is {row['state']}: only a finished message "
                        "can be acknowledged"
                    )
                conn.execute(
                    "UPDATE messages SET acked_at = ? WHERE id = ? AND acked_at IS NULL",
                    (now, message_id),
                )
        return len(message_ids)

    def requeue(self, message_id: int) -> None:
        """Give a finished message a fresh set of attempts (manual retry by an operator)."""
        with self._lock, self._write(durable=True) as conn:
            row = self._row(message_id)
            if row["state"] not in ("failed", "dead", "cancelled") or row["kind"] != "task":
                raise ConflictError(
                    f"message {message_id} is a {row['kind']} in state {row['state']}: only "
                    "a failed, dead or cancelled task can be requeued"
                )
            conn.execute(
                "UPDATE messages SET state = 'pending', attempts = 0, cancel_requested = 0, "
                "response = NULL, acked_at = NULL, finished_at = NULL, reason = ? WHERE id = ?",
                (f"requeued from {row['state']}", message_id),
            )

    def show(self, message_id: int) -> Message:
        with self._lock:
            return Message.from_row(self._row(message_id))

    def messages(self, state: str | None = None, limit: int = 100) -> list[Message]:
        """Messages in id order, optionally only those in one state."""
        if state is not None and state not in STATES:
            raise UsageError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        query, params = "SELECT * FROM messages", []
        if state is not None:
            query, params = query + " WHERE state = ?", [state]
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id LIMIT ?", [*params, limit])
            return [Message.from_row(row) for row in rows.fetchall()]

    def stale_results(self, message_id: int | None = None) -> list[dict[str, Any]]:
        """Results that arrived with an old fence: recorded, never applied."""
        query = "SELECT * FROM stale_results"
        params: tuple[int, ...] = ()
        if message_id is not None:
            query, params = query + " WHERE message_id = ?", (message_id,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [
            {**dict(row), "response": json.loads(row["response"]) if row["response"] else None}
            for row in rows
        ]

    def heartbeats(self) -> list[Heartbeat]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM heartbeats ORDER BY worker_id").fetchall()
        return [
            Heartbeat(
                worker_id=row["worker_id"],
                status=row["status"],
                current=json.loads(row["current"]),
                versions=json.loads(row["versions"]),
                reason=row["reason"],
                beat_at=row["beat_at"],
            )
            for row in rows
        ]

    def stats(self, *, live_only: bool = False) -> Stats:
        """Counts by state, unacknowledged responses, stale results, re-executions and
        the age of the oldest pending task.

        `live_only` (what every poll asks) counts only what partial indexes find at once
        (pending, claimed, unacknowledged): an inbox with a year of finished messages
        answers a poll as fast as a new one. The finished states read 0 then.
        """
        with self._lock:
            conn = self._conn
            by_state = dict.fromkeys(STATES, 0)
            if live_only:
                by_state["pending"] = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE state = 'pending' AND kind = 'task'"
                ).fetchone()[0]
                by_state["claimed"] = conn.execute(
                    "SELECT COUNT(*) FROM messages WHERE state = 'claimed'"
                ).fetchone()[0]
            else:
                for row in conn.execute(
                    "SELECT state, COUNT(*) AS n FROM messages WHERE kind = 'task' GROUP BY state"
                ):
                    by_state[row["state"]] = row["n"]
            unacked = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE acked_at IS NULL AND state NOT IN "
                "('pending', 'claimed')"
            ).fetchone()[0]
            stale = conn.execute("SELECT COUNT(*) FROM stale_results").fetchone()[0]
            reexec = (
                0
                if live_only
                else conn.execute(
                    "SELECT COALESCE(SUM(attempts - 1), 0) FROM messages WHERE attempts > 1"
                ).fetchone()[0]
            )
            oldest = conn.execute(
                "SELECT MIN(enqueued_at) FROM messages WHERE state = 'pending' AND kind = 'task'"
            ).fetchone()[0]
        now = self._clock()
        return Stats(
            by_state=by_state,
            unacked_responses=int(unacked),
            stale_results=int(stale),
            reexecutions=int(reexec),
            oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest),
            heartbeats=self.heartbeats(),
        )

    def prune(self, older_than_days: float) -> int:
        """Delete finished, acknowledged messages (and their stale results) older than N days."""
        if older_than_days < 0:
            raise UsageError(f"older_than_days must be >= 0, got {older_than_days}")
        with self._lock, self._write(durable=True) as conn:
            cutoff = self._clock() - older_than_days * 86400
            gone = conn.execute(
                "DELETE FROM messages WHERE acked_at IS NOT NULL AND finished_at < ? "
                "AND state IN ('done', 'failed', 'dead', 'cancelled') RETURNING id",
                (cutoff,),
            ).fetchall()
            conn.execute(
                "DELETE FROM stale_results WHERE message_id NOT IN (SELECT id FROM messages)"
            )
        return len(gone)
