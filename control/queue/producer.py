"""The orchestrator's writes to an inbox: a task enqueued (idempotent by key), a cancel."""

from __future__ import annotations

from control.errors import ConflictError, DrainedError, UsageError
from control.jsontext import canonical_json
from control.queue.base import InboxBase, check_key
from control.queue.records import Enqueued
from control.queue.schema import KINDS

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Any

    from control.queue.schema import Kind

DEFAULT_MAX_ATTEMPTS = 3


def content_hash(kind: str, payload: Any) -> str:
    """What makes two messages the same: their kind and their canonical JSON."""
    import hashlib  # noqa: PLC0415  here: a poll through `control queue rpc` never hashes

    return hashlib.sha256(f"{kind}\n{canonical_json(payload)}".encode()).hexdigest()


class Producer(InboxBase):
    """Enqueue and cancel."""

    def enqueue(
        self,
        payload: Any,
        *,
        key: str | None = None,
        kind: Kind = "task",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        allow_duplicate: bool = False,
        unless_drained: bool = False,
    ) -> Enqueued:
        """Store a message, or return the one already stored for it.

        With a key: the same key returns the existing message (`duplicate=True`)
        forever; the same key with different content is a conflict. Without a
        key: identical content enqueued within `duplicate_window_s` is skipped
        as a duplicate unless `allow_duplicate` is set. With `unless_drained`, a new
        task is refused (DrainedError) when the inbox is drained, in the same
        transaction as the insert: a dispatch that raced a drain learns it at once
        instead of leaving work its worker will not claim.
        """
        check_key(key)
        if kind not in KINDS:
            raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise UsageError(f"max_attempts must be a positive integer, got {max_attempts!r}")
        body = canonical_json(payload)
        digest = content_hash(kind, payload)
        with self._transaction(durable=True) as (conn, now):
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
            if unless_drained and kind == "task":
                drain = conn.execute("SELECT reason FROM drain").fetchone()
                if drain is not None:
                    raise DrainedError(
                        "the inbox is drained"
                        + (f" ({drain['reason']})" if drain["reason"] else "")
                        + ": it takes no new task"
                    )
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
        check_key(key)
        with self._transaction(durable=True) as (conn, now):
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
