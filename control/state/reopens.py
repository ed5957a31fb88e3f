"""Done phases sent back by the merge queue (control.merge_queue), with what they are told."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.jsontext import canonical_json
from control.state.base import StoreBase
from control.state.rows import ReopenRow, reopen_row


class Reopens(StoreBase):
    """The `reopens` table, and the phases it moves back to `waiting`."""

    def reopens(self, run_id: str, phase_id: str | None = None) -> list[ReopenRow]:
        query = "SELECT * FROM reopens WHERE run_id = ?"
        args: tuple[str, ...] = (run_id,)
        if phase_id is not None:
            query += " AND phase_id = ?"
            args = (run_id, phase_id)
        rows = self.conn.execute(query + " ORDER BY created_at, phase_id", args).fetchall()
        return [reopen_row(r) for r in rows]

    def reopen_phases(
        self,
        run_id: str,
        culprit: str,
        check_key: str,
        phases: Mapping[str, tuple[int, Mapping[str, Any]]],
    ) -> list[str]:
        """Send done phases back to `waiting`, in one transaction: `phases` maps each to
        (its accepted attempt, the feedback its next attempt is shown). Only a phase
        still done at that attempt moves (a repeat after a crash changes nothing);
        returns those that moved, each with a `phase_reopened` event."""
        now = self.clock()
        moved: list[str] = []
        with self.write() as conn:
            for phase_id, (attempt, feedback) in phases.items():
                reason = str(feedback.get("reason") or "")[:2000]
                row = conn.execute(
                    "UPDATE phases SET state = 'waiting', reason = ?, not_before = NULL, "
                    "updated_at = ? WHERE run_id = ? AND phase_id = ? AND state = 'done' "
                    "AND attempt = ? RETURNING phase_id, worker",
                    (reason, now, run_id, phase_id, attempt),
                ).fetchone()
                if row is None:
                    continue
                conn.execute(
                    "INSERT OR IGNORE INTO reopens (run_id, phase_id, after_attempt, culprit, "
                    "check_key, feedback, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_id, phase_id, attempt, culprit, check_key, canonical_json(feedback), now),
                )
                detail = {"attempt": attempt, "culprit": culprit, "check": check_key}
                self._event(
                    conn, run_id, "phase_reopened", phase_id, row["worker"],
                    detail | {"reason": reason},
                )  # fmt: skip
                moved.append(phase_id)
        return moved
