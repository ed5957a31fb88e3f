"""The one event stream: every run, phase, worker and fleet event, written once to the
state database with a versioned schema, and read from there by `control events`,
notifications and anything else that wants to know what happened.

The schema (kinds, fields, who writes each) is `KINDS` below and docs/events.md; a
change that removes or renames a field bumps `SCHEMA_VERSION`, adding one does not.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from control.jsontext import canonical_json

SCHEMA_VERSION = 1

Writer = Literal["state", "orchestrator"]


@dataclass(frozen=True)
class Kind:
    """One kind of event: who writes it and the fields of its `detail`.

    `state`: the state database writes it in the transaction that records the
    change (or, for `run_resumed`, when `control dispatch` takes the run up).
    `orchestrator`: nothing changes in the database (a worker seen down, a phase
    nobody can take), so `Orchestrator.say` writes it.
    """

    writer: Writer
    fields: tuple[str, ...]
    about: str


KINDS: dict[str, Kind] = {
    # runs
    "run_created": Kind("state", ("spec",), "a new run of a spec"),
    "run_resumed": Kind("state", ("spec",), "`control dispatch` took an existing run up"),
    "run_done": Kind("state", ("reason",), "every phase done (and merged)"),
    "run_failed": Kind("state", ("reason",), "the run ended with dead phases, or timed out"),
    "run_cancelled": Kind("state", ("reason",), "the operator cancelled the run"),
    "merged": Kind("state", ("branch", "commit"), "the integration branch was built and checked"),
    "run_repinned": Kind("state", ("pins",), "`control repin` moved the run to other versions"),
    "merge_failed": Kind("orchestrator", ("reason",), "the integration branch could not be built"),
    "integration_sending": Kind("state", ("attempt",), "the final check recorded before its send"),
    "integration_dispatched": Kind(
        "orchestrator",
        ("attempt", "duplicate", "checks", "lacks"),
        "a worker's inbox took the final check",
    ),
    "integration_retry": Kind("orchestrator", ("reason",), "the final check failed; tried again"),
    "integration_abandoned": Kind("orchestrator", ("attempt",), "its worker went down; resent"),
    "integration_verified": Kind(
        "orchestrator",
        ("phases", "commit"),
        "the merge queue verified a state holding these phases: the integration branch is there",
    ),
    "integration_bisect": Kind(
        "orchestrator",
        ("phases", "reason"),
        "a merged state failed its checks: the merge queue checks these phases to find why",
    ),
    "conflict_resolving": Kind(
        "orchestrator", ("reason",), "phases conflict at the final check: a resolution is sent"
    ),
    "conflict_resolved": Kind(
        "orchestrator", ("commit",), "the resolution was accepted; the final check follows"
    ),
    # phases
    "sending": Kind(
        "state",
        ("attempt", "reserved_usd", "account"),
        "an attempt recorded before its enqueue, with what it reserved of the budget",
    ),
    "dispatched": Kind(
        "state", ("attempt", "message_id", "duplicate"), "the worker's inbox took the attempt"
    ),
    "send_failed": Kind("orchestrator", ("reason",), "an enqueue failed; retried next tick"),
    "phase_done": Kind("state", ("attempt", "reason", "commit"), "a verified commit accepted"),
    "phase_retry": Kind("state", ("attempt", "reason", "commit"), "an attempt failed; retried"),
    "phase_lost": Kind("state", ("attempt", "reason", "commit"), "its machine was lost"),
    "phase_moved": Kind(
        "state",
        ("attempt", "reason", "commit"),
        "never started where it was sent (drained, off the run's pins): sent elsewhere, "
        "nothing counted",
    ),
    "phase_dead": Kind("state", ("attempt", "reason", "commit"), "no attempts left: dead"),
    "phase_reopened": Kind(
        "state",
        ("attempt", "culprit", "check", "reason"),
        "the merge queue sent a done phase back: it (or its prerequisite `culprit`) breaks the "
        "integration; its next attempt is shown the failure",
    ),
    "phase_stuck": Kind("orchestrator", ("reason",), "ready, but no live worker can take it"),
    "rate_limited": Kind("state", ("attempt", "reason", "commit"), "the agent hit a rate limit"),
    "late_result_ignored": Kind("state", ("attempt", "state"), "a result of an abandoned attempt"),
    "stale_cancelled": Kind("orchestrator", ("attempt", "state"), "an owed cancel confirmed"),
    "branch_repaired": Kind("orchestrator", ("commit",), "a done branch pointed back"),
    "retry": Kind("state", ("reason",), "`control retry` gave a phase fresh attempts"),
    "cancelled": Kind("state", ("reason",), "`control cancel` cancelled a phase"),
    # workers and the fleet
    "worker_unreachable": Kind("orchestrator", ("reason",), "a poll could not reach the worker"),
    "worker_down": Kind("orchestrator", ("reason",), "lost, or refusing work; its work moves"),
    "worker_up": Kind("orchestrator", (), "a down worker is back"),
    "worker_drained": Kind("orchestrator", ("now",), "a worker takes no new work (drained)"),
    "worker_undrained": Kind("orchestrator", (), "a drained worker takes work again"),
    "cancels_dropped": Kind(
        "state",
        ("count", "reason"),
        "cancels owed to a host gone from the inventory dropped: nothing can reach it",
    ),
    "alert_pending": Kind(
        "orchestrator", ("oldest_pending_s",), "a message pending past the alert threshold"
    ),
    "rate_limit_hold": Kind("state", ("until", "reason"), "dispatching held fleet-wide"),
    "rate_limit_resumed": Kind("state", ("reason",), "the hold ran out; dispatching resumes"),
    # money (control.budget)
    "budget_set": Kind("state", ("budget_usd",), "`control dispatch --budget` set the run's cap"),
    "budget_stop": Kind(
        "orchestrator",
        ("reason", "spent_usd", "budget_usd"),
        "nothing more fits in the run's budget: it stops, resumable with a raised one",
    ),
    "budget_alarm": Kind("state", ("until", "reason"), "spend per hour over the alarm: paused"),
    "budget_resumed": Kind("state", ("reason",), "the burn-rate pause ran out"),
}


@dataclass(frozen=True)
class Event:
    """One row of the stream, as every reader sees it (`to_dict` is the JSON form)."""

    id: int
    run_id: str | None
    at: float
    kind: str
    phase_id: str | None
    worker: str | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "id": self.id,
            "run_id": self.run_id,
            "at": self.at,
            "kind": self.kind,
            "phase_id": self.phase_id,
            "worker": self.worker,
            "detail": self.detail,
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Event:
        return cls(
            id=int(row["id"]),
            run_id=row["run_id"],
            at=float(row["at"]),
            kind=row["kind"],
            phase_id=row["phase_id"],
            worker=row["worker"],
            detail=json.loads(row["detail"]),
        )


def written_by(kind: str) -> Writer:
    """Who writes `kind`. A kind missing from `KINDS` is written by whoever says it
    (a test keeps `KINDS` complete; a run never stops over a missing entry)."""
    known = KINDS.get(kind)
    return "orchestrator" if known is None else known.writer


def write(
    conn: sqlite3.Connection,
    at: float,
    run_id: str | None,
    kind: str,
    phase_id: str | None = None,
    worker: str | None = None,
    detail: Any = None,
) -> None:
    """Append one event inside the caller's write transaction (the one writer)."""
    conn.execute(
        "INSERT INTO events (run_id, at, kind, phase_id, worker, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, at, kind, phase_id, worker, canonical_json(detail or {})),
    )


def read(
    conn: sqlite3.Connection,
    *,
    after_id: int = 0,
    run_id: str | None = None,
    limit: int = 1000,
) -> list[Event]:
    """Events after the cursor `after_id`, oldest first, of one run or of all.

    Both are range scans: the primary key (all runs) or `events_run` (one run).
    """
    if run_id is None:
        rows = conn.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
    else:
        rows = conn.execute(
            "SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
            (run_id, after_id, limit),
        )
    return [Event.from_row(r) for r in rows.fetchall()]


def last_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(id) FROM events").fetchone()
    return int(row[0] or 0)


def follow(
    conn: sqlite3.Connection,
    *,
    after_id: int = 0,
    run_id: str | None = None,
    interval_s: float = 0.2,
    stop: threading.Event | None = None,
    idle: Callable[[], None] | None = None,
) -> Iterator[Event]:
    """Every event after `after_id`, then each new one as it is written, until `stop`.

    Polls the primary key (a query that finds nothing costs microseconds).
    """
    stop = stop or threading.Event()
    cursor = after_id
    while not stop.is_set():
        batch = read(conn, after_id=cursor, run_id=run_id)
        for event in batch:
            cursor = event.id
            yield event
        if not batch:
            if idle is not None:
                idle()
            stop.wait(interval_s)


def describe(event: Event) -> str:
    """One line for a person: `12:01:02 phase_dead run=r... phase=p reason=...`."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    parts = [stamp, event.kind]
    for name, value in (("run", event.run_id), ("phase", event.phase_id), ("worker", event.worker)):
        if value:
            parts.append(f"{name}={value}")
    parts += [f"{k}={_shown(v)}" for k, v in event.detail.items() if v not in (None, "")]
    return " ".join(parts)


def _shown(value: Any, limit: int = 300) -> str:
    """A detail value for a terminal: agent text is data, so no control characters
    (escape sequences) get through, and it is cut at `limit` characters."""
    text = str(value)
    if not text.isprintable():
        text = json.dumps(text, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
