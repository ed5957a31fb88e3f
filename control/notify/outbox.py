"""The outbox: what each sink still has to receive, in the state database.

The router copies each new event a sink wants into one outbox row (dedupe key
`<sink>/<event id>`, unique: routing twice stores it once) together with what a
person needs to act on it, read from the database at that moment. Delivery takes
the due rows of a sink, marks them delivered after the sink accepted them (so a
crash in between sends them again: at least once), or pushes them back with an
exponential backoff. Rows wait across restarts until delivered.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from control import db, events
from control.errors import NotFoundError
from control.jsontext import canonical_json
from control.notify.config import SinkConfig
from control.state import StateStore

BACKOFF_S = 2.0
MAX_BACKOFF_S = 300.0
GIVE_UP_S = 7 * 24 * 3600.0  # a week undelivered: dead, with its last error
TAIL_CHARS = 600


@dataclass(frozen=True)
class Notice:
    """One outbox row on its way to a sink."""

    id: int
    sink: str
    dedupe_key: str
    run_id: str | None
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Notice:
        return cls(
            id=int(row["id"]),
            sink=row["sink"],
            dedupe_key=row["dedupe_key"],
            run_id=row["run_id"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            attempts=int(row["attempts"]),
            created_at=float(row["created_at"]),
        )


class Outbox:
    """Routing and delivery bookkeeping over one StateStore (the notifier's own)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def _write(self) -> Any:
        """synchronous=NORMAL: a commit lost to a power cut only means an event routed
        again (its cursor rolls back with it) or a notice sent again (at least once);
        and the write lock, shared with the orchestrator, is held for less time."""
        return db.write_transaction(self.store.conn, "normal")

    def route(self, sink: SinkConfig, limit: int = 500) -> int:
        """Copy the events after the sink's cursor that it wants into the outbox.

        A sink seen for the first time starts at the end of the stream (it is not
        sent the history). Returns the number of rows added."""
        conn = self.store.conn
        row = conn.execute(
            "SELECT after_id FROM notify_cursors WHERE sink = ?", (sink.name,)
        ).fetchone()
        if row is None:
            with self._write() as tx:
                tx.execute(
                    "INSERT OR IGNORE INTO notify_cursors (sink, after_id) VALUES (?, ?)",
                    (sink.name, events.last_id(tx)),
                )
            return 0
        batch = events.read(conn, after_id=int(row["after_id"]), limit=limit)
        if not batch:
            return 0
        wanted = [e for e in batch if e.kind in sink.kinds]
        payloads = [(e, self._payload(e)) for e in wanted]
        now = self.store.clock()
        added = 0
        with self._write() as tx:
            for event, payload in payloads:
                added += tx.execute(
                    "INSERT OR IGNORE INTO outbox (sink, dedupe_key, event_id, run_id, kind, "
                    "payload, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        sink.name,
                        f"{sink.name}/{event.id}",
                        event.id,
                        event.run_id,
                        event.kind,
                        canonical_json(payload),
                        now,
                        now,
                    ),
                ).rowcount
            tx.execute(
                "UPDATE notify_cursors SET after_id = MAX(after_id, ?) WHERE sink = ?",
                (batch[-1].id, sink.name),
            )
        return added

    def due(self, sink: str, limit: int = 50) -> list[Notice]:
        rows = self.store.conn.execute(
            "SELECT * FROM outbox WHERE sink = ? AND state = 'pending' AND next_at <= ? "
            "ORDER BY id LIMIT ?",
            (sink, self.store.clock(), limit),
        ).fetchall()
        return [Notice.from_row(r) for r in rows]

    def delivered(self, notices: list[Notice]) -> None:
        with self._write() as tx:
            tx.executemany(
                "UPDATE outbox SET state = 'delivered', delivered_at = ?, "
                "attempts = attempts + 1, last_error = NULL WHERE id = ? AND state = 'pending'",
                [(self.store.clock(), n.id) for n in notices],
            )

    def failed(self, notices: list[Notice], error: str) -> float:
        """Push the rows back with a doubling backoff; returns the delay applied."""
        now = self.store.clock()
        attempts = max(n.attempts for n in notices) + 1
        delay = min(MAX_BACKOFF_S, BACKOFF_S * float(2 ** min(attempts - 1, 20)))
        with self._write() as tx:
            for notice in notices:
                dead = now - notice.created_at > GIVE_UP_S
                tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_at = ?, "
                    "state = ? WHERE id = ? AND state = 'pending'",
                    (error[:500], now + delay, "dead" if dead else "pending", notice.id),
                )
        return delay

    def retry_now(self) -> None:
        with self._write() as tx:
            tx.execute(
                "UPDATE outbox SET next_at = ? WHERE state = 'pending' AND next_at > ?",
                (self.store.clock(), self.store.clock()),
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per sink and state, for `control notify --once` and tests."""
        out: dict[str, dict[str, int]] = {}
        for row in self.store.conn.execute(
            "SELECT sink, state, COUNT(*) AS n FROM outbox GROUP BY sink, state"
        ).fetchall():
            out.setdefault(row["sink"], {})[row["state"]] = int(row["n"])
        return out

    def oldest_pending_age(self, sink: str) -> float | None:
        row = self.store.conn.execute(
            "SELECT MIN(created_at) FROM outbox WHERE sink = ? AND state = 'pending'", (sink,)
        ).fetchone()
        return None if row[0] is None else self.store.clock() - float(row[0])

    # -- what a person needs to act ----------------------------------------------------

    def _payload(self, event: events.Event) -> dict[str, Any]:
        payload: dict[str, Any] = {"event": event.to_dict()}
        context: dict[str, Any] = {}
        store = self.store
        if event.run_id is not None and event.kind.startswith(("run_", "merge")):
            try:
                run = store.run(event.run_id)
            except NotFoundError:  # a run not visible (yet): no context
                run = None
            if run is not None:
                phases = store.phases(run.id)
                end = run.finished_at or event.at
                context.update(
                    spec=run.spec_path,
                    phases=len(phases),
                    done=sum(1 for p in phases.values() if p.state == "done"),
                    duration_s=round(end - run.created_at, 1),
                    cost_usd=round(sum(p.cost_usd for p in phases.values()), 4),
                    merge_branch=run.merge_branch,
                    merge_commit=run.merge_commit,
                )
                dead = {
                    p: {"reason": row.reason, "log_tail": self._tail(run.id, p)}
                    for p, row in phases.items()
                    if row.state in ("dead", "cancelled")
                }
                if dead:
                    context["dead"] = dead
        if event.run_id is not None and event.phase_id and event.kind.startswith("phase_"):
            tail = self._tail(event.run_id, event.phase_id)
            if tail:
                context["log_tail"] = tail
        if event.worker and event.kind.startswith("worker_"):
            row = store.workers().get(event.worker)
            if row is not None:
                context["versions"] = row.versions
                context["beat_status"] = row.beat_status
        if context:
            payload["context"] = context
        return payload

    def _tail(self, run_id: str, phase_id: str) -> str:
        """The end of the last failed verify command's output of the phase, if any."""
        for attempt in reversed(self.store.attempts(run_id, phase_id)):
            answer = attempt.answer()
            failed = () if answer is None else answer.failed_checks
            if failed:
                return failed[-1].output_tail[-TAIL_CHARS:]
        return ""
