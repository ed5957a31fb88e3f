"""The worker's side of an inbox: claim under a lease and a fence, renew, release,
finish (a stale fence's result is kept apart, never applied), heartbeat."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from control.errors import ConflictError, UsageError
from control.jsontext import canonical_json
from control.queue.base import InboxBase, check_positive
from control.queue.records import Claimed, Finished, Renewed

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Any


class Leases(InboxBase):
    """What a worker calls as it takes and runs its messages."""

    def requeue_expired(self) -> int:
        """Sweep expired leases now (claims also do this); returns how many moved."""
        with self._lock, self._write(durable=True) as conn:
            return self._expire_leases(conn, self._clock())

    def claim(self, worker_id: str, lease_seconds: float) -> Claimed | None:
        """Take the oldest pending task under a lease, or None when there is none."""
        _check_claimant(worker_id, lease_seconds)
        with self._lock:
            # Expiry can end a message (dead, cancelled): those transitions are as
            # durable as a completion, so they commit FULL on their own first.
            self._expire_dead_leases_for_read()
        with self._transaction(durable=False) as (conn, now):
            return self._claim_in(conn, now, worker_id, lease_seconds)

    def complete_and_claim(
        self, message_id: int, fence: int, response: Any, worker_id: str, lease_seconds: float
    ) -> tuple[Finished, Claimed | None]:
        """`complete`, then `claim`, in ONE transaction committed FULL (as a completion is).

        Why: a worker that finishes a message and takes the next pays one commit and one
        lock round instead of two. One transaction also means no crash can fall between
        the halves: either the result is stored and the next message is leased, or
        neither (a failing claim rolls the completion back). The completion keeps every
        rule of `complete` (a stale fence is recorded apart, changes nothing) and the
        claim every rule of `claim` (fence + 1, expired leases swept first).
        """
        _check_claimant(worker_id, lease_seconds)
        with self._transaction(durable=True) as (conn, now):
            finished = self._finish_in(conn, now, message_id, fence, "done", response, None)
            self._expire_leases(conn, now)
            return finished, self._claim_in(conn, now, worker_id, lease_seconds)

    @staticmethod
    def _claim_in(
        conn: sqlite3.Connection, now: float, worker_id: str, lease_seconds: float
    ) -> Claimed | None:
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
        check_positive("lease_seconds", lease_seconds)
        with self._transaction(durable=False) as (conn, now):
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
        with self._transaction(durable=True) as (conn, now):
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
        with self._transaction(durable=True) as (conn, now):
            return self._finish_in(conn, now, message_id, fence, outcome, response, reason)

    def _finish_in(
        self,
        conn: sqlite3.Connection,
        now: float,
        message_id: int,
        fence: int,
        outcome: str,
        response: Any,
        reason: str | None,
    ) -> Finished:
        body = canonical_json(response) if response is not None else None
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


def _check_claimant(worker_id: str, lease_seconds: float) -> None:
    if not worker_id or not worker_id.isprintable():
        raise UsageError(f"worker id must be printable and non-empty, got {worker_id!r}")
    check_positive("lease_seconds", lease_seconds)
