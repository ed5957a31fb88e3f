"""The orchestrator's state database: runs, phases, attempts, workers and every event.

What the orchestrator decides is committed here before it acts on it (a dispatch is
recorded as `sending` before the enqueue, a response is stored before it is
acknowledged on the worker), so a killed orchestrator resumes where it was, with
nothing dispatched twice and nothing lost.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control import db
from control.budget import reserve
from control.errors import ConflictError, NotFoundError, UnavailableError, UsageError
from control.events import read as read_events
from control.events import write as write_event
from control.messages import attempt_ref, integration_key
from control.queue import canonical_json

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        spec_path     TEXT NOT NULL,
        spec_hash     TEXT NOT NULL,
        spec          TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'cancelled')),
        created_at    REAL NOT NULL,
        finished_at   REAL,
        reason        TEXT,
        merge_branch  TEXT,
        merge_commit  TEXT
    );
    CREATE TABLE phases (
        run_id      TEXT NOT NULL REFERENCES runs (id),
        phase_id    TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN
                        ('waiting', 'sending', 'dispatched', 'done', 'dead', 'cancelled')),
        attempt     INTEGER NOT NULL DEFAULT 0,
        failures    INTEGER NOT NULL DEFAULT 0,
        worker      TEXT,
        branch      TEXT NOT NULL,
        commit_sha  TEXT,
        not_before  REAL,
        reason      TEXT,
        cost_usd    REAL NOT NULL DEFAULT 0,
        summary     TEXT,
        updated_at  REAL NOT NULL,
        PRIMARY KEY (run_id, phase_id)
    );
    CREATE TABLE attempts (
        run_id        TEXT NOT NULL,
        phase_id      TEXT NOT NULL,
        attempt       INTEGER NOT NULL,
        key           TEXT NOT NULL UNIQUE,
        worker        TEXT NOT NULL,
        message_id    INTEGER,
        state         TEXT NOT NULL CHECK (state IN
                          ('sending', 'dispatched', 'done', 'failed', 'abandoned', 'cancelled')),
        created_at    REAL NOT NULL,
        dispatched_at REAL,
        finished_at   REAL,
        reason        TEXT,
        response      TEXT,
        late_response TEXT,
        cancel_sent   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, phase_id, attempt)
    );
    CREATE TABLE workers (
        name         TEXT PRIMARY KEY,
        status       TEXT NOT NULL DEFAULT 'up' CHECK (status IN ('up', 'down')),
        unreachable  INTEGER NOT NULL DEFAULT 0,
        last_seen    REAL,
        beat_at      REAL,
        beat_seen_at REAL,
        beat_status  TEXT,
        versions     TEXT,
        reason       TEXT,
        down_since   REAL,
        alerted_at   REAL
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id   TEXT,
        at       REAL NOT NULL,
        kind     TEXT NOT NULL,
        phase_id TEXT,
        worker   TEXT,
        detail   TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_run ON events (run_id, id);
    CREATE TABLE freeform (
        key        TEXT PRIMARY KEY,
        worker     TEXT NOT NULL,
        message_id INTEGER,
        sent_at    REAL NOT NULL,
        state      TEXT NOT NULL DEFAULT 'sent',
        response   TEXT
    );
    """,
    # 2: cancels owed until confirmed, machine losses apart from failures, one live
    # driver per run (a lease), fleet-wide holds that survive a restart.
    """
    ALTER TABLE attempts ADD COLUMN cancel_owed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN push_ref TEXT;
    ALTER TABLE phases ADD COLUMN losses INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN driver TEXT;
    ALTER TABLE runs ADD COLUMN driver_expires_at REAL;
    CREATE INDEX attempts_owed ON attempts (worker) WHERE cancel_owed = 1 AND cancel_sent = 0;
    CREATE TABLE holds (
        name   TEXT PRIMARY KEY,
        until  REAL NOT NULL,
        reason TEXT
    );
    """,
    # 3: a year of history stays fast: runs found by time and spec through indexes;
    # a pruned run keeps a summary of what it was.
    """
    ALTER TABLE runs ADD COLUMN summary TEXT;
    CREATE INDEX runs_created ON runs (created_at, id);
    CREATE INDEX runs_spec ON runs (spec_path, created_at, id);
    CREATE INDEX runs_finished ON runs (finished_at) WHERE summary IS NULL;
    CREATE INDEX freeform_sent ON freeform (sent_at);
    """,
    # 4: the final check of a run, done by a worker (control.integration): one row per
    # attempt, its task kept so a resend after a crash is the same message.
    """
    CREATE TABLE integrations (
        run_id        TEXT NOT NULL REFERENCES runs (id),
        attempt       INTEGER NOT NULL,
        key           TEXT NOT NULL UNIQUE,
        worker        TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN
                          ('sending', 'dispatched', 'answered', 'done', 'failed', 'abandoned')),
        task          TEXT NOT NULL,
        created_at    REAL NOT NULL,
        finished_at   REAL,
        reason        TEXT,
        response      TEXT,
        late_response TEXT,
        PRIMARY KEY (run_id, attempt)
    );
    """,
    # 5: a worker's drain flag as its inbox last reported it ({now, reason, since}).
    """
    ALTER TABLE workers ADD COLUMN drained TEXT;
    """,
    # 6: the notification outbox (control/notify): one row per (sink, event), each
    # sink's cursor into the event stream, and the Slack thread of each run.
    """
    CREATE TABLE outbox (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        sink         TEXT NOT NULL,
        dedupe_key   TEXT NOT NULL UNIQUE,
        event_id     INTEGER NOT NULL,
        run_id       TEXT,
        kind         TEXT NOT NULL,
        payload      TEXT NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'dead')),
        created_at   REAL NOT NULL,
        next_at      REAL NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT,
        delivered_at REAL
    );
    CREATE INDEX outbox_due ON outbox (sink, next_at) WHERE state = 'pending';
    CREATE TABLE notify_cursors (
        sink     TEXT PRIMARY KEY,
        after_id INTEGER NOT NULL
    );
    CREATE TABLE notify_threads (
        sink    TEXT NOT NULL,
        run_id  TEXT NOT NULL,
        channel TEXT NOT NULL,
        ts      TEXT NOT NULL,
        PRIMARY KEY (sink, run_id)
    );
    """,
    # 7: every command the Slack agent received: who, when, what, the outcome.
    """
    CREATE TABLE slack_audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      REAL NOT NULL,
        user    TEXT NOT NULL,
        channel TEXT NOT NULL,
        command TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    """,
    # 8: the versions a run was started with ({node, claude_code, superagent}): it gives
    # no work to a host that reports others (a host half-way through an upgrade).
    """
    ALTER TABLE runs ADD COLUMN pins TEXT;
    """,
    # 9: budgets that hold (control.budget): the run's cap; what each attempt reserved
    # before its dispatch and what it cost (estimated: its reservation, when no cost came
    # back); the account it ran on.
    """
    ALTER TABLE runs ADD COLUMN budget_usd REAL;
    ALTER TABLE attempts ADD COLUMN reserved_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN cost_usd REAL;
    ALTER TABLE attempts ADD COLUMN cost_estimated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN account TEXT;
    """,
    # 10: the Slack agent: where a free-form task's answer is to be posted (and when it
    # was), and acting commands waiting for the asker's confirmation button.
    """
    ALTER TABLE freeform ADD COLUMN reply_to TEXT;
    ALTER TABLE freeform ADD COLUMN replied_at REAL;
    CREATE INDEX freeform_unreplied ON freeform (sent_at)
        WHERE reply_to IS NOT NULL AND replied_at IS NULL;
    CREATE TABLE slack_pending (
        token      TEXT PRIMARY KEY,
        user       TEXT NOT NULL,
        channel    TEXT NOT NULL,
        thread     TEXT NOT NULL,
        command    TEXT NOT NULL,
        created_at REAL NOT NULL,
        state      TEXT NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'confirmed', 'aborted')),
        decided_at REAL
    );
    """,
    # 11: what Slack delivered to the agent, by the key that names one delivery across
    # Slack's retries (an event's id; a click's action_ts and trigger_id): a retry, even
    # after a restart, is acknowledged and not acted on again. Pruned after a day.
    """
    CREATE TABLE slack_seen (
        key     TEXT PRIMARY KEY,
        seen_at REAL NOT NULL
    );
    CREATE INDEX slack_seen_at ON slack_seen (seen_at);
    """,
)


_STOPPED = ("dead", "cancelled")


def new_run_id(clock: Callable[[], float] = time.time) -> str:
    """Sortable and unique: `r20261128-102433-3fa2`."""
    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime(clock())) + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class PhaseRow:
    run_id: str
    phase_id: str
    state: str
    attempt: int
    failures: int
    worker: str | None
    branch: str
    commit_sha: str | None
    not_before: float | None
    reason: str | None
    cost_usd: float
    summary: str | None
    updated_at: float
    losses: int = 0


@dataclass(frozen=True)
class AttemptRow:
    run_id: str
    phase_id: str
    attempt: int
    key: str
    worker: str
    message_id: int | None
    state: str
    created_at: float
    dispatched_at: float | None
    finished_at: float | None
    reason: str | None
    response: Any
    late_response: Any
    cancel_sent: bool
    cancel_owed: bool = False
    push_ref: str | None = None
    reserved_usd: float = 0.0  # taken from the run's budget while in flight
    cost_usd: float | None = None  # once settled; None while in flight
    cost_estimated: bool = False  # no cost came back: its reservation stands for it
    account: str | None = None


@dataclass(frozen=True)
class IntegrationRow:
    run_id: str
    attempt: int
    key: str
    worker: str
    state: str
    task: Any
    created_at: float
    finished_at: float | None
    reason: str | None
    response: Any
    late_response: Any


@dataclass(frozen=True)
class RunRow:
    id: str
    spec_path: str
    spec_hash: str
    spec: Any
    status: str
    created_at: float
    finished_at: float | None
    reason: str | None
    merge_branch: str | None
    merge_commit: str | None
    driver: Any = None
    driver_expires_at: float | None = None
    summary: Any = None  # set when `gc` pruned the run's phases, attempts and events
    pins: Any = None  # {node, claude_code, superagent}: hosts reporting others get no work
    budget_usd: float | None = None  # the run's cap (control.budget); None: no cap

    def spec_phases(self) -> list[dict[str, Any]]:
        """The phases of the spec the run was created with (what a view draws)."""
        phases = self.spec.get("phases", []) if isinstance(self.spec, dict) else []
        return [p for p in phases if isinstance(p, dict)]

    def depends_on(self) -> dict[str, tuple[str, ...]]:
        """Each phase's prerequisites, from the spec the run was created with."""
        return {str(p.get("id")): tuple(p.get("depends_on") or ()) for p in self.spec_phases()}


@dataclass(frozen=True)
class WorkerRow:
    name: str
    status: str
    unreachable: int
    last_seen: float | None
    beat_at: float | None
    beat_seen_at: float | None
    beat_status: str | None
    versions: Any
    reason: str | None
    down_since: float | None
    alerted_at: float | None
    drained: Any = None  # {now, reason, since} while the inbox's drain flag is set


@dataclass(frozen=True)
class Pruned:
    """What `StateStore.gc` removed."""

    runs: int
    events: int
    answers: int


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _gone(driver: dict[str, Any], me: dict[str, Any]) -> bool:
    """A driver on this very host whose process no longer exists (killed: its lease
    has not run out yet, but nobody will renew it)."""
    if driver.get("host") != me.get("host") or not isinstance(driver.get("pid"), int):
        return False
    if driver["pid"] == me.get("pid"):
        return True  # this very process opens the run again (its earlier driver is over)
    try:
        os.kill(driver["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class StateStore:
    """All reads and writes of the state database; one per orchestrator process."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.clock = clock
        self.conn = db.connect(self.path, create=True, what="state database")
        db.migrate(self.conn, _MIGRATIONS, what=f"state database {self.path}")

    @classmethod
    def read_only(cls, path: Path, *, clock: Callable[[], float] = time.time) -> StateStore:
        """The state database opened for reading only (the web dashboard): no migration,
        no file created, and every write refused by SQLite itself."""
        store = cls.__new__(cls)
        store.path = Path(path)
        store.clock = clock
        store.conn = db.connect_read_only(store.path, what="state database")
        version = int(store.conn.execute("PRAGMA user_version").fetchone()[0])
        if version != len(_MIGRATIONS):
            store.conn.close()
            newer = "newer than this superagent knows" if version > len(_MIGRATIONS) else "older"
            raise UnavailableError(
                f"{store.path}: state database schema version {version} is {newer} "
                f"(expected {len(_MIGRATIONS)}); any `control` command that writes it migrates it"
            )
        return store

    def close(self) -> None:
        self.conn.close()

    def write(self, *, durable: bool = True) -> Any:
        """A write transaction; `durable=False` commits with synchronous=NORMAL, for what
        the next poll derives again anyway (a worker's liveness row)."""
        return db.write_transaction(self.conn, "full" if durable else "normal")

    # -- runs ------------------------------------------------------------------

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
        return None if found is None else self._run(found)

    def run(self, run_id: str) -> RunRow:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no run {run_id!r}")
        return self._run(row)

    def running_runs(self) -> list[RunRow]:
        """Every run not finished yet, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM runs WHERE status = 'running' ORDER BY created_at, id"
        )
        return [self._run(r) for r in rows.fetchall()]

    def runs(self, limit: int = 20) -> list[RunRow]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [self._run(r) for r in rows.fetchall()]

    @staticmethod
    def _run(row: sqlite3.Row) -> RunRow:
        data = dict(row)
        data["spec"] = json.loads(data["spec"])
        data["driver"] = _loads(data["driver"])
        data["summary"] = _loads(data["summary"])
        data["pins"] = _loads(data["pins"])
        return RunRow(**data)

    def finish_run(self, run_id: str, status: str, reason: str | None = None) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, reason = ? WHERE id = ?",
                (status, self.clock(), reason, run_id),
            )
            self._event(conn, run_id, f"run_{status}", detail={"reason": reason})

    def reopen_run(self, run_id: str) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, reason = NULL "
                "WHERE id = ?",
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

    @staticmethod
    def _committed(conn: sqlite3.Connection, run_id: str) -> float:
        """What a run spent plus what its attempts in flight reserved."""
        row = conn.execute(
            "SELECT COALESCE(SUM(CASE WHEN state IN ('sending', 'dispatched') THEN reserved_usd "
            "ELSE COALESCE(cost_usd, 0) END), 0) FROM attempts WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return float(row[0])

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
        rows = self.conn.execute(
            "SELECT finished_at, cost_usd FROM attempts WHERE run_id = ? "
            "AND cost_usd IS NOT NULL AND finished_at IS NOT NULL",
            (run_id,),
        ).fetchall()
        return [(float(r[0]), float(r[1])) for r in rows]

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

    def set_merge(self, run_id: str, branch: str, commit: str) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET merge_branch = ?, merge_commit = ? WHERE id = ?",
                (branch, commit, run_id),
            )
            self._event(conn, run_id, "merged", detail={"branch": branch, "commit": commit})

    # -- phases and attempts ------------------------------------------------------

    def phases(self, run_id: str) -> dict[str, PhaseRow]:
        rows = self.conn.execute("SELECT * FROM phases WHERE run_id = ?", (run_id,)).fetchall()
        return {r["phase_id"]: PhaseRow(**dict(r)) for r in rows}

    def phase_totals(self) -> dict[str, tuple[int, int, float]]:
        """Every run's (phases, phases done, cost) in one scan, for a list of runs."""
        rows = self.conn.execute(
            "SELECT run_id, COUNT(*), SUM(state = 'done'), COALESCE(SUM(cost_usd), 0) "
            "FROM phases GROUP BY run_id"
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2] or 0), float(r[3])) for r in rows}

    def attempts_since(self, since: float) -> list[AttemptRow]:
        """Every attempt of every run started at or after `since` (a worker's activity)."""
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE created_at >= ? ORDER BY created_at", (since,)
        ).fetchall()
        return [self._attempt(r) for r in rows]

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
        rows = self.conn.execute(
            "SELECT r.created_at, COALESCE(SUM(p.cost_usd), 0) FROM runs r "
            "LEFT JOIN phases p ON p.run_id = r.id WHERE r.created_at >= ? GROUP BY r.id",
            (since,),
        ).fetchall()
        return [(float(r[0]), float(r[1])) for r in rows]

    def attempts(self, run_id: str, phase_id: str | None = None) -> list[AttemptRow]:
        query, params = "SELECT * FROM attempts WHERE run_id = ?", [run_id]
        if phase_id is not None:
            query, params = query + " AND phase_id = ?", [*params, phase_id]
        rows = self.conn.execute(query + " ORDER BY created_at, attempt", params).fetchall()
        return [self._attempt(r) for r in rows]

    def attempt_by_key(self, key: str) -> AttemptRow | None:
        row = self.conn.execute("SELECT * FROM attempts WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._attempt(row)

    @staticmethod
    def _attempt(row: sqlite3.Row) -> AttemptRow:
        data = dict(row)
        data["response"] = _loads(data["response"])
        data["late_response"] = _loads(data["late_response"])
        data["cancel_sent"] = bool(data["cancel_sent"])
        data["cancel_owed"] = bool(data["cancel_owed"])
        return AttemptRow(**data)

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
                self._committed(conn, run_id),
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
            self._event(
                conn,
                attempt.run_id,
                "dispatched",
                attempt.phase_id,
                attempt.worker,
                {"attempt": attempt.attempt, "message_id": message_id, "duplicate": duplicate},
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
        event: str,
    ) -> bool:
        """Close an attempt and move its phase, in one transaction.

        Only an attempt still in flight moves its phase: what an operator decided
        (a cancel) or an earlier settlement stands. `owe_cancel` records, in the same
        transaction, that the worker must be told to drop the attempt (delivered until
        it confirms). The attempt's reservation gives way to its real cost in the same
        transaction; with no cost (`None`: a machine lost, an agent that does not say)
        the reservation stands for it, marked estimated. Returns whether the phase moved.
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
            self._event(
                conn,
                attempt.run_id,
                event,
                attempt.phase_id,
                attempt.worker,
                {"attempt": attempt.attempt, "reason": reason, "commit": commit},
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
            self._event(
                conn,
                attempt.run_id,
                "late_result_ignored",
                attempt.phase_id,
                attempt.worker,
                {"attempt": attempt.attempt, "state": (response or {}).get("state")},
            )

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
        return [self._attempt(r) for r in rows]

    def drop_owed_cancels(self, worker: str) -> int:
        """A host gone from the inventory: nothing can be delivered to it any more."""
        with self.write() as conn:
            gone = conn.execute(
                "UPDATE attempts SET cancel_owed = 0 WHERE worker = ? AND cancel_owed = 1 "
                "AND cancel_sent = 0 RETURNING key",
                (worker,),
            ).fetchall()
        return len(gone)

    def note_waiting(self, run_id: str, phase_id: str, reason: str | None) -> None:
        """Why a ready phase is not dispatched (no live worker can take it), for `status`."""
        with self.write() as conn:
            conn.execute(
                "UPDATE phases SET reason = ? WHERE run_id = ? AND phase_id = ? "
                "AND state = 'waiting'",
                (reason, run_id, phase_id),
            )

    def reset_phase(self, run_id: str, phase_id: str, reason: str) -> None:
        """`control retry`: a dead or cancelled phase gets a fresh set of attempts."""
        with self.write() as conn:
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
        """
        named = self.named_phases(run_id, phase_ids)
        if live := [f"{p} is {r.state}" for p, r in named.items() if r.state not in _STOPPED]:
            raise ConflictError(f"only dead or cancelled phases can be retried: {'; '.join(live)}")
        for phase_id in named:
            self.reset_phase(run_id, phase_id, reason)
        if self.run(run_id).status != "running":
            self.reopen_run(run_id)

    def cancel_targets(self, run_id: str, phase_ids: Iterable[str] | None) -> list[str]:
        """The phases `control cancel` acts on: those named, or every open one of the run."""
        if phase_ids:
            return list(self.named_phases(run_id, phase_ids))
        return [p for p, r in self.phases(run_id).items() if r.state not in ("done", "cancelled")]

    def cancel_phases(self, run_id: str, phase_ids: Iterable[str], reason: str) -> list[str]:
        """The operator's cancel, recorded before anything is sent: the phases end
        `cancelled`, their attempts in flight too, each with a cancel owed to its
        worker. Returns the keys of those attempts."""
        owed: list[str] = []
        with self.write() as conn:
            now = self.clock()
            for phase_id in phase_ids:
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
        return owed

    # -- retention -----------------------------------------------------------------------

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
                    events += self._prune_run(conn, run_id)
            runs += len(ids)
            if len(ids) < batch:
                break
        with self.write() as conn:
            answers = conn.execute(
                "DELETE FROM freeform WHERE state = 'answered' AND sent_at < ?", (cutoff,)
            ).rowcount
        return Pruned(runs=runs, events=events, answers=answers)

    @staticmethod
    def _prune_run(conn: sqlite3.Connection, run_id: str) -> int:
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
        conn.execute("DELETE FROM phases WHERE run_id = ?", (run_id,))
        return conn.execute("DELETE FROM events WHERE run_id = ?", (run_id,)).rowcount

    # -- the run's driver -------------------------------------------------------------

    def acquire_driver(self, run_id: str, holder: dict[str, Any], ttl_s: float) -> None:
        """Become the one live orchestrator of `run_id`, or say who is.

        A lease: the driver renews it every tick; a killed driver's lease runs out,
        and one on this host whose process is gone is taken over at once.
        """
        now = self.clock()
        with self.write() as conn:
            row = conn.execute(
                "SELECT driver, driver_expires_at FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.path}: no run {run_id!r}")
            current = _loads(row["driver"])
            live = (
                current is not None
                and (row["driver_expires_at"] or 0) > now
                and current.get("token") != holder.get("token")
                and not _gone(current, holder)
            )
            if live:
                until = time.strftime("%H:%M:%S", time.localtime(row["driver_expires_at"]))
                raise ConflictError(
                    f"run {run_id} is driven by process {current.get('pid')} on "
                    f"{current.get('host')} (lease until {until}); stop it first, or wait "
                    "for its lease to run out"
                )
            conn.execute(
                "UPDATE runs SET driver = ?, driver_expires_at = ? WHERE id = ?",
                (canonical_json(holder), now + ttl_s, run_id),
            )

    def renew_driver(self, run_id: str, token: str, ttl_s: float) -> bool:
        """Extend the lease; False when another driver took the run over."""
        with self.write() as conn:
            row = conn.execute(
                "UPDATE runs SET driver_expires_at = ? WHERE id = ? "
                "AND json_extract(driver, '$.token') = ? RETURNING id",
                (self.clock() + ttl_s, run_id, token),
            ).fetchone()
        return row is not None

    def release_driver(self, run_id: str, token: str) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET driver = NULL, driver_expires_at = NULL WHERE id = ? "
                "AND json_extract(driver, '$.token') = ?",
                (run_id, token),
            )

    def live_driver(self, run: RunRow) -> dict[str, Any] | None:
        """Who drives the run now, or None (no orchestrator, or its lease ran out)."""
        if run.driver is None or (run.driver_expires_at or 0) <= self.clock():
            return None
        return dict(run.driver)

    def run_status(self, run: RunRow) -> str:
        """The run's status as a person should read it: a `running` run whose
        orchestrator is gone (killed, its lease run out) is `interrupted`, not running."""
        if run.status != "running":
            return run.status
        driver = self.live_driver(run)
        if driver is None:
            return "interrupted (no live orchestrator; `control dispatch` resumes it)"
        return f"running (driven by process {driver.get('pid')} on {driver.get('host')})"

    # -- fleet-wide holds ---------------------------------------------------------------

    def hold(
        self, name: str, until: float, reason: str, run_id: str | None = None,
        *, event: str = "rate_limit_hold",
    ) -> None:  # fmt: skip
        """A hold on dispatching (e.g. an account's rate limit) that survives restarts;
        a later `until` extends it, an earlier one never shortens it."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO holds (name, until, reason) VALUES (?, ?, ?) ON CONFLICT (name) "
                "DO UPDATE SET until = MAX(until, excluded.until), reason = excluded.reason",
                (name, until, reason),
            )
            detail = {"until": until, "reason": reason}
            self._event(conn, run_id, event, None, None, detail)

    def release_hold(
        self, name: str, run_id: str | None = None, *, event: str = "rate_limit_resumed"
    ) -> bool:
        """End a hold whose time has come, saying so once (whoever ends it first)."""
        with self.write() as conn:
            gone = conn.execute(
                "DELETE FROM holds WHERE name = ? AND until <= ? RETURNING reason",
                (name, self.clock()),
            ).fetchone()
            if gone is not None:
                self._event(conn, run_id, event, None, None, {"reason": gone[0]})
        return gone is not None

    def held_until(self, name: str) -> float:
        row = self.conn.execute("SELECT until FROM holds WHERE name = ?", (name,)).fetchone()
        return 0.0 if row is None else float(row["until"])

    # -- workers -------------------------------------------------------------------

    def workers(self) -> dict[str, WorkerRow]:
        rows = self.conn.execute("SELECT * FROM workers").fetchall()
        out = {}
        for row in rows:
            data = dict(row)
            data["versions"] = _loads(data["versions"])
            data["drained"] = _loads(data["drained"])
            out[row["name"]] = WorkerRow(**data)
        return out

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
        return [self._attempt(r) for r in rows]

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

    # -- events --------------------------------------------------------------------

    def _event(
        self,
        conn: sqlite3.Connection,
        run_id: str | None,
        kind: str,
        phase_id: str | None = None,
        worker: str | None = None,
        detail: Any = None,
    ) -> None:
        write_event(conn, self.clock(), run_id, kind, phase_id, worker, detail)

    def event(
        self,
        run_id: str | None,
        kind: str,
        phase_id: str | None = None,
        worker: str | None = None,
        detail: Any = None,
    ) -> None:
        with self.write() as conn:
            self._event(conn, run_id, kind, phase_id, worker, detail)

    def events(self, run_id: str, after_id: int = 0) -> list[dict[str, Any]]:
        return [
            e.to_dict() | {"detail": e.detail}
            for e in read_events(self.conn, after_id=after_id, run_id=run_id, limit=-1)
        ]

    # -- free-form tasks -------------------------------------------------------------

    def record_freeform(
        self, key: str, worker: str, reply_to: Mapping[str, str] | None = None
    ) -> None:
        """`reply_to`: where the answer is to be posted (the Slack agent's thread)."""
        with self.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO freeform (key, worker, sent_at, reply_to) "
                "VALUES (?, ?, ?, ?)",
                (key, worker, self.clock(), canonical_json(reply_to) if reply_to else None),
            )

    def unreplied_answers(self) -> list[dict[str, Any]]:
        """Free-form tasks whose answer is to be posted somewhere and has not been yet."""
        rows = self.conn.execute(
            "SELECT * FROM freeform WHERE reply_to IS NOT NULL AND replied_at IS NULL "
            "ORDER BY sent_at"
        ).fetchall()
        return [
            {**dict(r), "response": _loads(r["response"]), "reply_to": _loads(r["reply_to"])}
            for r in rows
        ]

    def mark_replied(self, key: str) -> None:
        with self.write() as conn:
            conn.execute("UPDATE freeform SET replied_at = ? WHERE key = ?", (self.clock(), key))

    def answers(self, limit: int = 50) -> list[dict[str, Any]]:
        """Free-form tasks sent with `control enqueue`, newest first, with their answers."""
        rows = self.conn.execute(
            "SELECT * FROM freeform ORDER BY sent_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [{**dict(r), "response": _loads(r["response"])} for r in rows]

    def store_freeform_response(self, key: str, message_id: int, response: Any) -> bool:
        with self.write() as conn:
            row = conn.execute(
                "UPDATE freeform SET state = 'answered', message_id = ?, response = ? "
                "WHERE key = ? RETURNING key",
                (message_id, canonical_json(response), key),
            ).fetchone()
        return row is not None

    # -- the final check (control.integration) --------------------------------------

    def integrations(self, run_id: str) -> list[IntegrationRow]:
        rows = self.conn.execute(
            "SELECT * FROM integrations WHERE run_id = ? ORDER BY attempt", (run_id,)
        ).fetchall()
        return [self._integration(r) for r in rows]

    @staticmethod
    def _integration(row: sqlite3.Row) -> IntegrationRow:
        data = dict(row)
        for name in ("task", "response", "late_response"):
            data[name] = _loads(data[name])
        return IntegrationRow(**data)

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
