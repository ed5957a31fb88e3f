"""A run's final check (control.integration), one row per attempt, sent and answered like
a phase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from control.jsontext import canonical_json
from control.messages import integration_key
from control.state.base import StoreBase
from control.state.rows import IntegrationRow, integration_row


class Integrations(StoreBase):
    """The `integrations` table."""

    def integrations(self, run_id: str) -> list[IntegrationRow]:
        rows = self.conn.execute(
            "SELECT * FROM integrations WHERE run_id = ? ORDER BY attempt", (run_id,)
        ).fetchall()
        return [integration_row(r) for r in rows]

    def record_integration_sending(
        self, run_id: str, worker: str, task_for: Callable[[int], Any]
    ) -> IntegrationRow:
        """The intent to send the next attempt of the final check, before it is sent;
        `task_for(attempt)` builds its payload."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM integrations WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            attempt = int(row[0])
            key = integration_key(run_id, attempt)
            conn.execute(
                "INSERT INTO integrations (run_id, attempt, key, worker, state, task, "
                "created_at) VALUES (?, ?, ?, ?, 'sending', ?, ?)",
                (run_id, attempt, key, worker, canonical_json(task_for(attempt)), self.clock()),
            )
            self._event(conn, run_id, "integration_sending", None, worker, {"attempt": attempt})
        return self.integrations(run_id)[-1]

    def settle_integration(self, key: str, state: str, reason: str | None = None) -> None:
        """Move an attempt of the final check on (dispatched, done, failed, abandoned)."""
        finished = None if state == "dispatched" else self.clock()
        with self.write() as conn:
            row = conn.execute(
                "UPDATE integrations SET state = ?, reason = COALESCE(?, reason), "
                "finished_at = COALESCE(?, finished_at) WHERE key = ? "
                "RETURNING run_id, worker, attempt",
                (state, reason, finished, key),
            ).fetchone()
            if row is not None:
                self._event(
                    conn,
                    row["run_id"],
                    f"integration_{state}",
                    None,
                    row["worker"],
                    {"attempt": row["attempt"], "reason": reason},
                )

    def store_integration_response(self, key: str, message: Any) -> bool:
        """A worker's answer to a final check; False when the key is not in this database.

        The answer of the attempt in flight is kept as its response; any other (an
        abandoned attempt finishing late) is recorded and changes nothing.
        """
        body = canonical_json(message)
        with self.write() as conn:
            row = conn.execute(
                "UPDATE integrations SET state = 'answered', response = ? "
                "WHERE key = ? AND state IN ('sending', 'dispatched') RETURNING run_id",
                (body, key),
            ).fetchone()
            if row is not None:
                return True
            late = conn.execute(
                "UPDATE integrations SET late_response = COALESCE(late_response, ?) "
                "WHERE key = ? RETURNING run_id",
                (body, key),
            ).fetchone()
        return late is not None
