"""The state database's schema: one migration per step, applied in order by `control.db`.

The database records how many it has applied (`PRAGMA user_version`), so a database
written by an older superagent moves forward; a new step is appended, never edited in.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
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
    # 12: the merge queue (control.merge_queue): a done phase reopened because the
    # integration of verified states found that it breaks it (or one of its
    # prerequisites does), with the feedback its next attempt is shown.
    """
    CREATE TABLE reopens (
        run_id        TEXT NOT NULL REFERENCES runs (id),
        phase_id      TEXT NOT NULL,
        after_attempt INTEGER NOT NULL,
        culprit       TEXT NOT NULL,
        check_key     TEXT NOT NULL,
        feedback      TEXT NOT NULL,
        created_at    REAL NOT NULL,
        PRIMARY KEY (run_id, phase_id, after_attempt)
    );
    """,
    # 13: the open runs, found without reading every run of the database's history:
    # `control health`, the tick's account and host counts and the open-runs list join
    # through them (a year of runs was scanned for the few running ones).
    """
    CREATE INDEX runs_running ON runs (created_at, id) WHERE status = 'running';
    """,
)
