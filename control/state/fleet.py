"""The workers as the orchestrator last saw them, and what each holds in flight."""

from __future__ import annotations

from typing import Any

from control.jsontext import canonical_json
from control.state.base import StoreBase
from control.state.rows import AttemptRow, WorkerRow, attempt_row, worker_row


class Fleet(StoreBase):
    """The `workers` table and the questions asked of attempts per host or account."""

    def workers(self) -> dict[str, WorkerRow]:
        rows = self.conn.execute("SELECT * FROM workers").fetchall()
        return {row["name"]: worker_row(row) for row in rows}

    def update_worker(self, name: str, **fields: Any) -> None:
        for column in ("versions", "drained"):
            if fields.get(column) is not None:
                fields[column] = canonical_json(fields[column])
        columns = ", ".join(f"{column} = ?" for column in fields)
        with self.write(durable=False) as conn:
            conn.execute("INSERT OR IGNORE INTO workers (name) VALUES (?)", (name,))
            if fields:
                conn.execute(
                    f"UPDATE workers SET {columns} WHERE name = ?", [*fields.values(), name]
                )

    def forget_worker(self, name: str) -> bool:
        """A host removed from the fleet (`control remove`): its row goes; the attempts it
        ran stay in their runs' history. Whether there was a row."""
        with self.write() as conn:
            return (
                conn.execute(
                    "DELETE FROM workers WHERE name = ? RETURNING name", (name,)
                ).fetchone()
                is not None
            )

    def in_flight_on(self, worker: str) -> list[AttemptRow]:
        """The current attempts `worker` holds in any open run."""
        rows = self.conn.execute(
            "SELECT a.* FROM attempts a JOIN phases p ON p.run_id = a.run_id "
            "AND p.phase_id = a.phase_id AND p.attempt = a.attempt JOIN runs r ON r.id = a.run_id "
            "WHERE a.worker = ? AND a.state IN ('sending', 'dispatched') "
            "AND p.state IN ('sending', 'dispatched') AND r.status = 'running' "
            "ORDER BY a.created_at",
            (worker,),
        ).fetchall()
        return [attempt_row(r) for r in rows]

    def accounts_in_use(self) -> dict[str, int]:
        """Agent runs in flight per account, over every open run of this database."""
        rows = self.conn.execute(
            "SELECT a.account, COUNT(*) FROM attempts a JOIN runs r ON r.id = a.run_id "
            "WHERE a.account IS NOT NULL AND a.state IN ('sending', 'dispatched') "
            "AND r.status = 'running' GROUP BY a.account"
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def hosts_with_state(self) -> set[str]:
        """Every host this database holds something live about: a worker row, an attempt
        in flight in an open run, a cancel owed."""
        rows = self.conn.execute(
            "SELECT name FROM workers UNION SELECT a.worker FROM attempts a "
            "JOIN runs r ON r.id = a.run_id WHERE a.state IN ('sending', 'dispatched') "
            "AND r.status = 'running' UNION SELECT worker FROM attempts "
            "WHERE cancel_owed = 1 AND cancel_sent = 0"
        ).fetchall()
        return {str(r[0]) for r in rows}
