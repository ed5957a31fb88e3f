"""Runs: created with every phase waiting, finished, reopened, moved to other pins or
another budget, merged."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from control.errors import NotFoundError, UsageError
from control.jsontext import canonical_json
from control.state.base import StoreBase
from control.state.rows import RunRow, run_row


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    """Sortable and unique: `r20261128-102433-3fa2`."""
    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime(clock())) + "-" + secrets.token_hex(2)


class Runs(StoreBase):
    """A run's row: what it was created with, where it stands, how it ended."""

    def create_run(
        self,
        spec_path: str,
        spec_hash: str,
        spec: Any,
        phases: Iterable[tuple[str, str]],
        *,
        pins: dict[str, str] | None = None,
        budget_usd: float | None = None,
    ) -> str:
        """A new run with every phase waiting; `phases` are (phase id, branch) pairs;
        `pins` the versions it runs on; `budget_usd` the most it may spend."""
        run_id = new_run_id(self.clock)
        now = self.clock()
        with self.write() as conn:
            conn.execute(
                "INSERT INTO runs (id, spec_path, spec_hash, spec, status, created_at, pins, "
                "budget_usd) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (
                    run_id,
                    spec_path,
                    spec_hash,
                    canonical_json(spec),
                    now,
                    None if pins is None else canonical_json(pins),
                    budget_usd,
                ),
            )
            conn.executemany(
                "INSERT INTO phases (run_id, phase_id, state, branch, updated_at) "
                "VALUES (?, ?, 'waiting', ?, ?)",
                [(run_id, phase_id, branch, now) for phase_id, branch in phases],
            )
            self._event(conn, run_id, "run_created", detail={"spec": spec_path})
        return run_id

    def latest_run(self, spec_path: str | None = None) -> RunRow | None:
        query = "SELECT * FROM runs"
        params: tuple[str, ...] = ()
        if spec_path is not None:
            query, params = query + " WHERE spec_path = ?", (spec_path,)
        row = self.conn.execute(query + " ORDER BY created_at DESC, id DESC LIMIT 1", params)
        found = row.fetchone()
        return None if found is None else run_row(found)

    def run(self, run_id: str) -> RunRow:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no run {run_id!r}")
        return run_row(row)

    def running_runs(self) -> list[RunRow]:
        """Every run not finished yet, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE status = 'running' ORDER BY created_at, id"
        )
        return [run_row(r) for r in rows.fetchall()]

    def runs(self, limit: int = 20) -> list[RunRow]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [run_row(r) for r in rows.fetchall()]

    def finish_run(self, run_id: str, status: str, reason: str | None = None) -> None:
        with self.write() as conn:
            self._finish_run(conn, run_id, status, reason)

    def _finish_run(
        self, conn: sqlite3.Connection, run_id: str, status: str, reason: str | None
    ) -> None:
        conn.execute(
            "UPDATE runs SET status = ?, finished_at = ?, reason = ? WHERE id = ?",
            (status, self.clock(), reason, run_id),
        )
        self._event(conn, run_id, f"run_{status}", detail={"reason": reason})

    def reopen_run(self, run_id: str) -> None:
        with self.write() as conn:
            self._reopen_run(conn, run_id)

    @staticmethod
    def _reopen_run(conn: sqlite3.Connection, run_id: str) -> None:
        """An ended run running again (a retry, a resume); a running one is left as it is."""
        conn.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, reason = NULL "
            "WHERE id = ? AND status != 'running'",
            (run_id,),
        )

    def set_pins(self, run_id: str, pins: dict[str, str]) -> None:
        """Move a run to other versions (after the fleet was upgraded under it)."""
        with self.write() as conn:
            found = conn.execute(
                "UPDATE runs SET pins = ? WHERE id = ? RETURNING id",
                (canonical_json(pins), run_id),
            ).fetchone()
            if found is None:
                raise NotFoundError(f"no run {run_id!r}")
            self._event(conn, run_id, "run_repinned", detail={"pins": pins})

    def set_budget(self, run_id: str, budget_usd: float) -> None:
        """Give a run another budget (`control dispatch --budget`): one stopped by its
        budget goes on when resumed with a raised one."""
        if not budget_usd > 0:
            raise UsageError(f"a budget must be more than $0, not {budget_usd!r}")
        with self.write() as conn:
            found = conn.execute(
                "UPDATE runs SET budget_usd = ? WHERE id = ? RETURNING id", (budget_usd, run_id)
            ).fetchone()
            if found is None:
                raise NotFoundError(f"no run {run_id!r}")
            self._event(conn, run_id, "budget_set", detail={"budget_usd": budget_usd})

    def set_merge(self, run_id: str, branch: str, commit: str) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET merge_branch = ?, merge_commit = ? WHERE id = ?",
                (branch, commit, run_id),
            )
            self._event(conn, run_id, "merged", detail={"branch": branch, "commit": commit})
