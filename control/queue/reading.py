"""The orchestrator's and the operator's reads of an inbox: responses and their
acknowledgement, what a key became, messages, stale results, heartbeats, counts, pruning."""

from __future__ import annotations

import json
from collections.abc import Iterable

from control.errors import ConflictError, UsageError
from control.queue.base import InboxBase
from control.queue.records import Heartbeat, Message, Stats
from control.queue.schema import FINISHED_STATES, STATES

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Any


class Reading(InboxBase):
    """Responses read and acknowledged in two steps, so none is lost between them."""

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

    def ack(self, *message_ids: int) -> int:
        """Mark responses as stored by the orchestrator; idempotent. Returns how many."""
        if not message_ids:
            return 0
        with self._transaction(durable=True) as (conn, now):
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
