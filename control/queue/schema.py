"""The inbox's schema, one migration per step (`control.db` applies them in order), and
the kinds and states a message can have."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Literal

    Kind = Literal["task", "cancel"]

KINDS: tuple[str, ...] = ("task", "cancel")
STATES: tuple[str, ...] = ("pending", "claimed", "done", "failed", "dead", "cancelled")
FINISHED_STATES: tuple[str, ...] = ("done", "failed", "dead", "cancelled")

MIGRATIONS: tuple[str, ...] = (
    # 1: messages, heartbeats, stale results
    """
    CREATE TABLE messages (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused
        key              TEXT UNIQUE,
        content_hash     TEXT NOT NULL,
        kind             TEXT NOT NULL DEFAULT 'task' CHECK (kind IN ('task', 'cancel')),
        payload          TEXT NOT NULL,
        state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                             ('pending', 'claimed', 'done', 'failed', 'dead', 'cancelled')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_owner      TEXT,
        lease_expires_at REAL,
        fence            INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        enqueued_at      REAL NOT NULL,
        claimed_at       REAL,
        renewed_at       REAL,
        finished_at      REAL,
        response         TEXT,
        acked_at         REAL,
        reason           TEXT
    );
    CREATE INDEX messages_pending ON messages (id) WHERE state = 'pending' AND kind = 'task';
    CREATE INDEX messages_leases ON messages (lease_expires_at) WHERE state = 'claimed';
    CREATE INDEX messages_content ON messages (content_hash, enqueued_at);
    -- The predicate names the two unfinished states, not the four finished ones: an IN
    -- list of four made every write that touches `state` cost ~3x (measured).
    CREATE INDEX messages_unacked ON messages (finished_at)
        WHERE acked_at IS NULL AND state NOT IN ('pending', 'claimed');
    CREATE TABLE stale_results (
        id          INTEGER PRIMARY KEY,
        message_id  INTEGER NOT NULL,
        fence       INTEGER NOT NULL,
        outcome     TEXT NOT NULL,
        response    TEXT,
        reason      TEXT,
        received_at REAL NOT NULL
    );
    CREATE TABLE heartbeats (
        worker_id TEXT PRIMARY KEY,
        status    TEXT NOT NULL,
        current   TEXT NOT NULL DEFAULT '[]',
        versions  TEXT NOT NULL DEFAULT '{}',
        reason    TEXT,
        beat_at   REAL NOT NULL
    );
    """,
    # 2: the drain flag: an operator's "take no new work" kept in the inbox itself, so
    # it holds across restarts of the worker and travels through the same protocol.
    """
    CREATE TABLE drain (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        now    INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        since  REAL NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
