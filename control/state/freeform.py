"""Free-form tasks (`control enqueue`, the Slack agent): sent, answered, replied to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.jsontext import canonical_json
from control.state.base import StoreBase
from control.state.rows import loads


class Freeform(StoreBase):
    """The `freeform` table: one row per task key, its answer, where to post it."""

    def record_freeform(
        self, key: str, worker: str, reply_to: Mapping[str, str] | None = None
    ) -> None:
        """`reply_to`: where the answer is to be posted (the Slack agent's thread)."""
        with self.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO freeform (key, worker, sent_at, reply_to) "
                "VALUES (?, ?, ?, ?)",
                (key, worker, self.clock(), canonical_json(reply_to) if reply_to else None),
            )

    def unreplied_answers(self) -> list[dict[str, Any]]:
        """Free-form tasks whose answer is to be posted somewhere and has not been yet."""
        rows = self.conn.execute(
            "SELECT * FROM freeform WHERE reply_to IS NOT NULL AND replied_at IS NULL "
            "ORDER BY sent_at"
        ).fetchall()
        return [
            {**dict(r), "response": loads(r["response"]), "reply_to": loads(r["reply_to"])}
            for r in rows
        ]

    def mark_replied(self, key: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE freeform SET replied_at = ? WHERE key = ?", (self.clock(), key))

    def answers(self, limit: int = 50) -> list[dict[str, Any]]:
        """Free-form tasks sent with `control enqueue`, newest first, with their answers."""
        rows = self.conn.execute(
            "SELECT * FROM freeform ORDER BY sent_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [{**dict(r), "response": loads(r["response"])} for r in rows]

    def store_freeform_response(self, key: str, message_id: int, response: Any) -> bool:
        with self.write() as conn:
            row = conn.execute(
                "UPDATE freeform SET state = 'answered', message_id = ?, response = ? "
                "WHERE key = ? RETURNING key",
                (message_id, canonical_json(response), key),
            ).fetchone()
        return row is not None
