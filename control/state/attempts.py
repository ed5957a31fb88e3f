"""Phases and their attempts: the intent to dispatch recorded before the enqueue, the
dispatch, the settlement that moves the phase, a late result kept for the record."""

from __future__ import annotations

import sqlite3
from typing import Any

from control.budget import reserve
from control.errors import NotFoundError
from control.jsontext import canonical_json
from control.messages import attempt_ref
from control.state.base import StoreBase
from control.state.costs import committed
from control.state.rows import AttemptRow, PhaseRow, attempt_row


class Attempts(StoreBase):
    """What the orchestrator's loop writes as it dispatches and hears back."""

    def phases(self, run_id: str) -> dict[str, PhaseRow]:
        rows = self.conn.execute("SELECT * FROM phases WHERE run_id = ?", (run_id,)).fetchall()
        return {r["phase_id"]: PhaseRow(**dict(r)) for r in rows}

    def attempts_since(self, since: float) -> list[AttemptRow]:
        """Every attempt of every run started at or after `since` (a worker's activity)."""
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE created_at >= ? ORDER BY created_at", (since,)
        ).fetchall()
        return [attempt_row(r) for r in rows]

    def attempts(self, run_id: str, phase_id: str | None = None) -> list[AttemptRow]:
        query, params = "SELECT * FROM attempts WHERE run_id = ?", [run_id]
        if phase_id is not None:
            query, params = query + " AND phase_id = ?", [*params, phase_id]
        rows = self.conn.execute(query + " ORDER BY created_at, attempt", params).fetchall()
        return [attempt_row(r) for r in rows]

    def attempt_by_key(self, key: str) -> AttemptRow | None:
        row = self.conn.execute("SELECT * FROM attempts WHERE key = ?", (key,)).fetchone()
        return None if row is None else attempt_row(row)

    def record_sending(
        self,
        run_id: str,
        phase_id: str,
        worker: str,
        *,
        cap_usd: float | None = None,
        account: str | None = None,
    ) -> AttemptRow:
        """The dispatch intent, committed before the enqueue is sent, with what the
        attempt reserves from the run's budget (its cap, see `control.budget.reserve`)
        decided in the same transaction: OverBudget, and nothing written, when it does
        not fit."""
        now = self.clock()
        with self.write() as conn:
            budget = conn.execute("SELECT budget_usd FROM runs WHERE id = ?", (run_id,)).fetchone()
            reserved = reserve(
                None if budget is None else budget[0],
                committed(conn, run_id),
                cap_usd,
                f"phase {phase_id!r}",
            )
            row = conn.execute(
                "UPDATE phases SET state = 'sending', attempt = attempt + 1, worker = ?, "
                "updated_at = ?, reason = NULL WHERE run_id = ? AND phase_id = ? "
                "AND state = 'waiting' RETURNING attempt",
                (worker, now, run_id, phase_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"phase {phase_id!r} of run {run_id} is not waiting")
            attempt = int(row["attempt"])
            key = f"{run_id}/{phase_id}/{attempt}"
            conn.execute(
                "INSERT INTO attempts (run_id, phase_id, attempt, key, worker, state, "
                "created_at, push_ref, reserved_usd, account) "
                "VALUES (?, ?, ?, ?, ?, 'sending', ?, ?, ?, ?)",
                (
                    run_id,
                    phase_id,
                    attempt,
                    key,
                    worker,
                    now,
                    attempt_ref(run_id, phase_id, attempt),
                    reserved,
                    account,
                ),
            )
            detail: dict[str, Any] = {"attempt": attempt}
            if reserved:
                detail["reserved_usd"] = round(reserved, 6)
            if account:
                detail["account"] = account
            self._event(conn, run_id, "sending", phase_id, worker, detail)
        found = self.attempt_by_key(key)
        assert found is not None
        return found

    def record_dispatched(self, attempt: AttemptRow, message_id: int, duplicate: bool) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE attempts SET state = 'dispatched', message_id = ?, dispatched_at = ? "
                "WHERE key = ? AND state = 'sending'",
                (message_id, self.clock(), attempt.key),
            )
            conn.execute(
                "UPDATE phases SET state = 'dispatched', updated_at = ? "
                "WHERE run_id = ? AND phase_id = ? AND state = 'sending' AND attempt = ?",
                (self.clock(), attempt.run_id, attempt.phase_id, attempt.attempt),
            )
            self._attempt_event(
                conn, attempt, "dispatched", message_id=message_id, duplicate=duplicate
            )

    def settle_attempt(
        self,
        attempt: AttemptRow,
        *,
        attempt_state: str,
        phase_state: str,
        reason: str | None,
        response: Any = None,
        commit: str | None = None,
        not_before: float | None = None,
        count_failure: bool = False,
        count_loss: bool = False,
        owe_cancel: bool = False,
        cost_usd: float | None = None,
        summary: str | None = None,
        drop_cancels: str | None = None,
        event: str,
    ) -> bool:
        """Close an attempt and move its phase, in one transaction.

        Only an attempt still in flight moves its phase: what an operator decided
        (a cancel) or an earlier settlement stands. `owe_cancel` records, in the same
        transaction, that the worker must be told to drop the attempt (delivered until
        it confirms). The attempt's reservation gives way to its real cost in the same
        transaction; with no cost (`None`: a machine lost, an agent that does not say)
        the reservation stands for it, marked estimated. With `drop_cancels` (why: its
        worker is gone from the inventory) no cancel is owed for it and every cancel still
        owed to that worker, of any run, is dropped in the same transaction: nothing can be
        delivered to it any more. Returns whether the phase moved.
        """
        now = self.clock()
        with self.write() as conn:
            before = conn.execute("SELECT state FROM attempts WHERE key = ?", (attempt.key,))
            found = before.fetchone()
            in_flight = found is not None and found[0] in ("sending", "dispatched")
            settled = conn.execute(
                "UPDATE attempts SET state = ?, finished_at = ?, reason = ?, "
                "response = COALESCE(?, response), cancel_owed = MAX(cancel_owed, ?), "
                "cost_estimated = CASE WHEN ? THEN (? IS NULL AND reserved_usd > 0) "
                "ELSE cost_estimated END, "
                "cost_usd = CASE WHEN ? THEN COALESCE(?, reserved_usd) ELSE cost_usd END "
                "WHERE key = ? RETURNING cost_usd",
                (
                    attempt_state,
                    now,
                    reason,
                    None if response is None else canonical_json(response),
                    int(owe_cancel),
                    int(in_flight),
                    cost_usd,
                    int(in_flight),
                    cost_usd,
                    attempt.key,
                ),
            ).fetchone()
            # Charged to the phase once: an attempt settled before (a cancel) was charged then.
            charged = float(settled[0] or 0.0) if settled is not None and in_flight else 0.0
            moved = conn.execute(
                "UPDATE phases SET state = ?, reason = ?, commit_sha = COALESCE(?, commit_sha), "
                "not_before = ?, failures = failures + ?, losses = losses + ?, "
                "cost_usd = cost_usd + ?, summary = COALESCE(?, summary), updated_at = ? "
                "WHERE run_id = ? AND phase_id = ? AND attempt = ? "
                "AND state IN ('sending', 'dispatched') RETURNING phase_id",
                (
                    phase_state,
                    reason,
                    commit,
                    not_before,
                    int(count_failure),
                    int(count_loss),
                    charged,
                    summary,
                    now,
                    attempt.run_id,
                    attempt.phase_id,
                    attempt.attempt,
                ),
            ).fetchone()
            if moved is None:
                return False
            self._attempt_event(conn, attempt, event, reason=reason, commit=commit)
            if drop_cancels is not None:
                self._drop_owed_cancels(
                    conn, attempt.worker, drop_cancels, attempt.run_id, attempt.phase_id
                )
        return True

    def record_late_response(
        self, attempt: AttemptRow, response: Any, cost_usd: float | None = None
    ) -> None:
        """A result from an abandoned attempt: kept for the record, changes nothing but
        what the attempt cost (the real cost it reports replaces the estimate)."""
        with self.write() as conn:
            conn.execute(
                "UPDATE attempts SET late_response = ? WHERE key = ? AND late_response IS NULL",
                (canonical_json(response), attempt.key),
            )
            if cost_usd is not None:
                conn.execute(
                    "UPDATE attempts SET cost_usd = ?, cost_estimated = 0 WHERE key = ? "
                    "AND state NOT IN ('sending', 'dispatched') "
                    "AND (cost_usd IS NULL OR cost_estimated = 1)",
                    (cost_usd, attempt.key),
                )
            state = (response or {}).get("state")
            self._attempt_event(conn, attempt, "late_result_ignored", state=state)

    def note_waiting(self, run_id: str, phase_id: str, reason: str | None) -> None:
        """Why a ready phase is not dispatched (no live worker can take it), for `status`."""
        with self.write() as conn:
            conn.execute(
                "UPDATE phases SET reason = ? WHERE run_id = ? AND phase_id = ? "
                "AND state = 'waiting'",
                (reason, run_id, phase_id),
            )

    def _drop_owed_cancels(
        self,
        conn: sqlite3.Connection,
        worker: str,
        reason: str,
        run_id: str | None = None,
        phase_id: str | None = None,
    ) -> int:
        """Inside the caller's transaction: every cancel owed to `worker` (a host gone
        from the inventory), of any run, is dropped, with a `cancels_dropped` event when
        there was one. Safe: an attempt written off that still runs there can only push
        its own attempt ref, which no branch follows. Returns how many."""
        gone = conn.execute(
            "UPDATE attempts SET cancel_owed = 0 WHERE worker = ? AND cancel_owed = 1 "
            "AND cancel_sent = 0 RETURNING key",
            (worker,),
        ).fetchall()
        if gone:
            self._event(conn, run_id, "cancels_dropped", phase_id, worker,
                        {"count": len(gone), "reason": reason})  # fmt: skip
        return len(gone)

    def _attempt_event(
        self, conn: sqlite3.Connection, attempt: AttemptRow, kind: str, **detail: Any
    ) -> None:
        """An event about one attempt: its run, phase, worker and number, then `detail`."""
        self._event(
            conn, attempt.run_id, kind, attempt.phase_id, attempt.worker,
            {"attempt": attempt.attempt, **detail},
        )  # fmt: skip
