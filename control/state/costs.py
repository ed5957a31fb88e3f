"""What runs cost: settled costs, reservations in flight, per worker, per account, per
phase, and the history `control plan` forecasts from."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from control.errors import UsageError
from control.state.base import StoreBase


def committed(conn: sqlite3.Connection, run_id: str) -> float:
    """What a run spent plus what its attempts in flight reserved (what a new
    reservation must fit beside, inside the same transaction)."""
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN state IN ('sending', 'dispatched') THEN reserved_usd "
        "ELSE COALESCE(cost_usd, 0) END), 0) FROM attempts WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return float(row[0])


class Costs(StoreBase):
    """The money side of the state database (`control.budget` decides; this counts)."""

    def spending(self, run_id: str) -> dict[str, float]:
        """{spent, reserved, estimated}: settled costs, reservations in flight, and the
        part of `spent` that is a reservation standing for a cost that never came back."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(CASE WHEN state NOT IN ('sending', 'dispatched') "
            "THEN COALESCE(cost_usd, 0) END), 0), "
            "COALESCE(SUM(CASE WHEN state IN ('sending', 'dispatched') THEN reserved_usd END), 0), "
            "COALESCE(SUM(CASE WHEN cost_estimated = 1 THEN cost_usd END), 0) "
            "FROM attempts WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return {"spent": float(row[0]), "reserved": float(row[1]), "estimated": float(row[2])}

    def costs(self, run_id: str) -> list[tuple[float, float]]:
        """(when settled, cost) of every settled attempt of a run, for the burn rate."""
        return self._pairs(
            "SELECT finished_at, cost_usd FROM attempts WHERE run_id = ? "
            "AND cost_usd IS NOT NULL AND finished_at IS NOT NULL",
            run_id,
        )

    def cost_by(self, column: str, run_id: str | None = None) -> dict[str, float]:
        """Settled cost per worker or per account (of one run, or of every run)."""
        if column not in ("worker", "account"):
            raise UsageError(f"cost is kept per worker or per account, not per {column!r}")
        query = (
            f"SELECT COALESCE({column}, '-') AS who, SUM(cost_usd) FROM attempts "
            "WHERE cost_usd IS NOT NULL"
        )
        params: tuple[str, ...] = ()
        if run_id is not None:
            query, params = query + " AND run_id = ?", (run_id,)
        rows = self.conn.execute(query + " GROUP BY who ORDER BY who", params).fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    def cost_history(self, spec_path: str, runs: int = 20) -> dict[str, list[float]]:
        """What each phase cost (all its attempts) in the last `runs` runs of a spec where
        it was done: the history `control plan` forecasts from."""
        rows = self.conn.execute(
            "SELECT a.phase_id, a.run_id, SUM(COALESCE(a.cost_usd, 0)) FROM attempts a "
            "JOIN phases p ON p.run_id = a.run_id AND p.phase_id = a.phase_id AND p.state = 'done' "
            "WHERE a.run_id IN (SELECT id FROM runs WHERE spec_path = ? "
            "ORDER BY created_at DESC LIMIT ?) GROUP BY a.phase_id, a.run_id",
            (spec_path, runs),
        ).fetchall()
        history: dict[str, list[float]] = {}
        for phase_id, _, cost in rows:
            history.setdefault(str(phase_id), []).append(float(cost))
        return history

    def phase_totals(self, run_ids: Sequence[str]) -> dict[str, tuple[int, int, float]]:
        """The (phases, phases done, cost) of each of `run_ids` in one query, for a list
        of runs: only theirs, so the list costs the same after a year of runs."""
        marks = ", ".join("?" * len(run_ids))
        rows = self.conn.execute(
            "SELECT run_id, COUNT(*), SUM(state = 'done'), COALESCE(SUM(cost_usd), 0) "
            f"FROM phases WHERE run_id IN ({marks}) GROUP BY run_id",
            tuple(run_ids),
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2] or 0), float(r[3])) for r in rows}

    def costliest_phases(self, limit: int) -> list[tuple[str, str, float]]:
        """(run, phase, cost) of the phases that cost the most, of every run."""
        rows = self.conn.execute(
            "SELECT run_id, phase_id, cost_usd FROM phases WHERE cost_usd > 0 "
            "ORDER BY cost_usd DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [(r[0], r[1], float(r[2])) for r in rows]

    def run_costs_since(self, since: float) -> list[tuple[float, float]]:
        """(created_at, cost) of every run created at or after `since`."""
        return self._pairs(
            "SELECT r.created_at, COALESCE(SUM(p.cost_usd), 0) FROM runs r "
            "LEFT JOIN phases p ON p.run_id = r.id WHERE r.created_at >= ? GROUP BY r.id",
            since,
        )

    def _pairs(self, query: str, *params: object) -> list[tuple[float, float]]:
        """(time, cost) pairs as a query returns them."""
        return [(float(a), float(b)) for a, b in self.conn.execute(query, params).fetchall()]
