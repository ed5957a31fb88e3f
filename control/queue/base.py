"""One inbox file opened: the connection, its lock, write transactions of the right
durability, and leases that ran out put back (every side needs them)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

from control import db
from control.errors import NotFoundError, UsageError
from control.queue.schema import MIGRATIONS

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Any, Self

DEFAULT_DUPLICATE_WINDOW_S = 600.0
MAX_KEY_LENGTH = 512


def check_key(key: str | None) -> None:
    if key is None:
        return
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise UsageError(
            f"idempotency key must be 1-{MAX_KEY_LENGTH} printable characters, got {key!r:.80}"
        )


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"{name} must be positive, got {value}")


class InboxBase:
    """The connection to one inbox, its write transactions and its lease expiry: what
    every side of the inbox is built on."""

    def __init__(
        self,
        path: db.StrPath,
        *,
        create: bool = True,
        sync: db.Synchronous = "full",
        busy_timeout_s: float = db.DEFAULT_BUSY_TIMEOUT_S,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sync not in ("full", "normal"):
            raise UsageError(f"sync must be 'full' or 'normal', got {sync!r}")
        self.path = os.fspath(path)  # text, not a Path: see control.db
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
            db.migrate(self._conn, MIGRATIONS, what=f"inbox {self.path}")
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool) -> Iterator[tuple[sqlite3.Connection, float]]:
        """A write under the inbox's lock, and the time it happens at (read once it holds
        the write lock, so no other writer comes between the two)."""
        with self._lock, self._write(durable) as conn:
            yield conn, self._clock()

    def _write(self, durable: bool) -> Any:
        return db.write_transaction(
            self._conn, self.sync if durable else "normal", self._busy_timeout_s
        )

    def _row(self, message_id: int) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no message {message_id}")
        return row  # type: ignore[no-any-return]

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
