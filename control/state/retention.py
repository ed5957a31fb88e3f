"""A year of history stays fast: finished runs pruned to a one-row summary, answered
free-form tasks dropped, in small transactions."""

from __future__ import annotations

import sqlite3

from control.errors import UsageError
from control.jsontext import canonical_json
from control.state.base import StoreBase
from control.state.rows import Pruned


class Retention(StoreBase):
    """`control gc`: what is past its age goes; running runs are never touched."""

    def gc(self, older_than_days: float, *, batch: int = 50) -> Pruned:
        """Prune what is past its age: finished runs' phases, attempts and events (each
        run keeps a one-row summary: status, reason, phase counts, cost, merge), and
        answered free-form tasks. Small transactions, so a dispatch sharing the
        database waits for none of them long. Running runs are never touched."""
        if older_than_days < 0:
            raise UsageError(f"older_than_days must be >= 0, got {older_than_days}")
        cutoff = self.clock() - older_than_days * 86400
        runs = events = 0
        while True:
            with self.write() as conn:
                ids = [
                    r["id"]
                    for r in conn.execute(
                        "SELECT id FROM runs WHERE summary IS NULL AND finished_at < ? "
                        "AND status != 'running' ORDER BY finished_at LIMIT ?",
                        (cutoff, batch),
                    ).fetchall()
                ]
                for run_id in ids:
                    events += _prune_run(conn, run_id)
            runs += len(ids)
            if len(ids) < batch:
                break
        with self.write() as conn:
            answers = conn.execute(
                "DELETE FROM freeform WHERE state = 'answered' AND sent_at < ?", (cutoff,)
            ).rowcount
        return Pruned(runs=runs, events=events, answers=answers)


def _prune_run(conn: sqlite3.Connection, run_id: str) -> int:
    """One finished run down to its summary row; how many events went."""
    counts = {
        r["state"]: r["n"]
        for r in conn.execute(
            "SELECT state, COUNT(*) AS n FROM phases WHERE run_id = ? GROUP BY state",
            (run_id,),
        )
    }
    cost, attempts = conn.execute(
        "SELECT COALESCE(SUM(cost_usd), 0), "
        "(SELECT COUNT(*) FROM attempts WHERE run_id = ?) FROM phases WHERE run_id = ?",
        (run_id, run_id),
    ).fetchone()
    summary = {"phases": counts, "attempts": attempts, "cost_usd": round(cost, 6)}
    conn.execute(
        "UPDATE runs SET summary = ?, driver = NULL WHERE id = ?",
        (canonical_json(summary), run_id),
    )
    conn.execute("DELETE FROM attempts WHERE run_id = ?", (run_id,))
    conn.execute("DELETE FROM integrations WHERE run_id = ?", (run_id,))
    conn.execute("DELETE FROM reopens WHERE run_id = ?", (run_id,))
    conn.execute("DELETE FROM phases WHERE run_id = ?", (run_id,))
    return conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,)).rowcount
