"""What an operator does to a run's phases (`control retry`, `control cancel`, the Slack
agent, the dashboard), and the cancels owed to workers until they confirm.

The rules live here, not in the commands: only a stopped phase can be retried, a cancel
is recorded before anything is sent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from control.errors import ConflictError, NotFoundError
from control.state.attempts import Attempts
from control.state.rows import AttemptRow, PhaseRow, attempt_row
from control.state.runs import Runs

_STOPPED = ("dead", "cancelled")
_FINISHED = ("done", "cancelled")


class Cancelling(NamedTuple):
    """What a cancel recorded: the phases it cancelled and the attempts owed a cancel."""

    phases: list[str]
    owed: list[str]


class Interventions(Attempts, Runs):
    """Retry and cancel, on top of the phases and runs they change."""

    def reset_phase(self, run_id: str, phase_id: str, reason: str) -> None:
        """`control retry`: a dead or cancelled phase gets a fresh set of attempts."""
        with self.write() as conn:
            self._reset_phase(conn, run_id, phase_id, reason)

    def _reset_phase(
        self, conn: sqlite3.Connection, run_id: str, phase_id: str, reason: str
    ) -> None:
        conn.execute(
            "UPDATE phases SET state = 'waiting', failures = 0, not_before = NULL, "
            "reason = ?, updated_at = ? WHERE run_id = ? AND phase_id = ?",
            (reason, self.clock(), run_id, phase_id),
        )
        self._event(conn, run_id, "retry", phase_id, None, {"reason": reason})

    def named_phases(self, run_id: str, phase_ids: Iterable[str]) -> dict[str, PhaseRow]:
        """The named phases of a run; NotFoundError naming every unknown one."""
        rows = self.phases(run_id)
        wanted = list(dict.fromkeys(phase_ids))
        if unknown := [p for p in wanted if p not in rows]:
            listed = ", ".join(repr(p) for p in unknown)
            raise NotFoundError(
                f"run {run_id} has no phase {listed} (its phases: {', '.join(sorted(rows))})"
            )
        return {p: rows[p] for p in wanted}

    def retry_phases(self, run_id: str, phase_ids: Iterable[str], reason: str) -> None:
        """`control retry`: dead or cancelled phases get a fresh set of attempts.

        Only a phase that has stopped can be retried; the run reopens if it had ended.
        The rule is checked and the phases reset in one write transaction: nothing (a
        late answer, a cancel) changes a phase between the check and the reset.
        """
        with self.write() as conn:
            named = self.named_phases(run_id, phase_ids)
            live = [f"{p} is {r.state}" for p, r in named.items() if r.state not in _STOPPED]
            if live:
                raise ConflictError(
                    f"only dead or cancelled phases can be retried: {'; '.join(live)}"
                )
            for phase_id in named:
                self._reset_phase(conn, run_id, phase_id, reason)
            self._reopen_run(conn, run_id)

    def cancel_phases(
        self, run_id: str, phase_ids: Iterable[str] | None, reason: str
    ) -> Cancelling:
        """The operator's cancel, recorded before anything is sent: the phases named (none:
        every open one, and the run ends `cancelled`) end `cancelled`, their attempts in
        flight too, each with a cancel owed to its worker. One write transaction: the
        phases it picks are the phases it cancels."""
        with self.write() as conn:
            if phase_ids is None:
                targets = [p for p, r in self.phases(run_id).items() if r.state not in _FINISHED]
            else:
                targets = list(self.named_phases(run_id, phase_ids))
            now = self.clock()
            owed: list[str] = []
            for phase_id in targets:
                conn.execute(
                    "UPDATE phases SET state = 'cancelled', reason = ?, updated_at = ? "
                    "WHERE run_id = ? AND phase_id = ? AND state NOT IN ('done', 'cancelled')",
                    (reason, now, run_id, phase_id),
                )
                owed += [
                    row["key"]
                    for row in conn.execute(
                        "UPDATE attempts SET state = 'cancelled', finished_at = ?, reason = ?, "
                        "cancel_owed = 1, cost_usd = reserved_usd, cost_estimated = "
                        "reserved_usd > 0 WHERE run_id = ? AND phase_id = ? "
                        "AND state IN ('sending', 'dispatched') RETURNING key",
                        (now, reason, run_id, phase_id),
                    ).fetchall()
                ]
                self._event(conn, run_id, "cancelled", phase_id, None, {"reason": reason})
            if phase_ids is None:
                self._finish_run(conn, run_id, "cancelled", reason)
        return Cancelling(targets, owed)

    def mark_cancel_sent(self, key: str) -> None:
        """The worker's inbox confirmed the cancel (cancelled, flagged, or already over)."""
        with self.write() as conn:
            conn.execute("UPDATE attempts SET cancel_sent = 1 WHERE key = ?", (key,))

    def owe_cancel(self, key: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE attempts SET cancel_owed = 1 WHERE key = ?", (key,))

    def owed_cancels(self) -> list[AttemptRow]:
        """Cancels recorded but not yet confirmed by the worker, of every run, finished
        ones included: a written-off attempt must be stopped wherever it still runs."""
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE cancel_owed = 1 AND cancel_sent = 0 "
            "ORDER BY created_at, attempt"
        ).fetchall()
        return [attempt_row(r) for r in rows]

    def drop_owed_cancels(self, worker: str, reason: str) -> int:
        """A host gone from the inventory: nothing can be delivered to it any more."""
        with self.write() as conn:
            return self._drop_owed_cancels(conn, worker, reason)
