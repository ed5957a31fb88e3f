"""The queues bench/bench_queue.py measures, each behind one adapter: superagent's inbox
(three ways of committing) and its peers huey, litequeue and persist-queue."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any

from huey.storage import SqliteStorage
from litequeue import LiteQueue
from persistqueue import SQLiteAckQueue
from persistqueue.exceptions import Empty

from control.queue import Queue

LEASE_SECONDS = 300.0


def _journal_mode(path: Path) -> str:
    """The journal mode stored in the file (WAL persists), read on a fresh connection."""
    conn = sqlite3.connect(os.fspath(path))
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()
    finally:
        conn.close()


_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _synchronous(conn: sqlite3.Connection) -> str:
    return _SYNC_NAMES.get(int(conn.execute("PRAGMA synchronous").fetchone()[0]), "?")


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(os.fspath(path))
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# -- the systems under test ----------------------------------------------------------
#
# Each adapter: `create` (parent, before a phase), `open` (in the worker process, its own
# connection), `enqueue`, `consume` (one full consumer cycle; returns the message number or
# None when the queue is empty), `mode` (what it really runs with), `verify` (parent, after
# the consumers: the database holds every message as processed, once).


class Superagent:
    name = "superagent"
    label = "superagent"

    def __init__(self, path: Path) -> None:
        self.path = path / "queue.db"
        self.q: Any = None
        self.worker_id = f"bench-{os.getpid()}"

    def _queue_class(self) -> Any:
        return Queue

    def create(self) -> None:
        self._queue_class()(self.path, create=True, sync="full").close()

    def open(self) -> None:
        self.q = self._queue_class()(self.path, create=False, sync="full")

    def enqueue(self, n: int) -> None:
        got = self.q.enqueue({"n": n}, key=f"bench-{n}")
        if got.duplicate:
            raise RuntimeError(f"message {n} reported as a duplicate: {got}")

    def consume(self) -> int | None:
        claimed = self.q.claim(self.worker_id, LEASE_SECONDS)
        if claimed is None:
            return None
        finished = self.q.complete(claimed.id, claimed.fence, {"n": claimed.payload["n"]})
        if not finished.accepted:
            raise RuntimeError(f"complete of {claimed.id} refused: {finished}")
        return int(claimed.payload["n"])

    def mode(self) -> str:
        return (
            f"journal={_journal_mode(self.path)}; enqueue+complete synchronous="
            f"{self.q.sync.upper()}, claim NORMAL (by design: a lost claim is re-run, fenced)"
        )

    def close(self) -> None:
        self.q.close()

    def verify(self, messages: int) -> bool:
        with Queue(self.path, create=False) as q:
            stats = q.stats()
        done = stats.by_state["done"]
        others = sum(v for k, v in stats.by_state.items() if k != "done")
        return done == messages and others == 0 and stats.reexecutions == 0


class SuperagentAllFull(Superagent):
    """The same queue with its claim committed at FULL too: the peers' durability exactly."""

    name = "superagent_all_full"
    label = "superagent, claim FULL"

    def _queue_class(self) -> Any:
        if not callable(getattr(Queue, "_write", None)):
            raise RuntimeError("control.queue.Queue._write is gone: cannot force claim FULL")

        class AllFullQueue(Queue):
            def _write(self, durable: bool) -> Any:
                return super()._write(True)

        return AllFullQueue

    def mode(self) -> str:
        return f"journal={_journal_mode(self.path)}; every commit synchronous=FULL"


class SuperagentCombined(Superagent):
    """The worker's cycle as `complete_and_claim`: the result and the next lease in one
    FULL commit (the first claim of a consumer is a plain claim)."""

    name = "superagent_combined"
    label = "superagent, complete_and_claim"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.held: Any = None

    def consume(self) -> int | None:
        if self.held is None:
            self.held = self.q.claim(self.worker_id, LEASE_SECONDS)
            if self.held is None:
                return None
        claimed = self.held
        finished, self.held = self.q.complete_and_claim(
            claimed.id, claimed.fence, {"n": claimed.payload["n"]}, self.worker_id, LEASE_SECONDS
        )
        if not finished.accepted:
            raise RuntimeError(f"complete of {claimed.id} refused: {finished}")
        return int(claimed.payload["n"])

    def mode(self) -> str:
        return f"journal={_journal_mode(self.path)}; complete+next claim in one FULL commit"


class Huey:
    """huey.storage.SqliteStorage: enqueue; consumer = dequeue + put_data(result)."""

    name = "huey"
    label = "huey SqliteStorage"

    def __init__(self, path: Path) -> None:
        self.path = path / "huey.db"
        self.storage: Any = None

    def _storage(self) -> Any:
        # fsync=True is huey's own switch for PRAGMA synchronous=2 (FULL); WAL is its default.
        return SqliteStorage(
            name="bench", filename=os.fspath(self.path), fsync=True, journal_mode="wal", timeout=60
        )

    def create(self) -> None:
        self._storage().close()

    def open(self) -> None:
        self.storage = self._storage()

    def enqueue(self, n: int) -> None:
        self.storage.enqueue(str(n).encode())

    def consume(self) -> int | None:
        data = self.storage.dequeue()
        if data is None:
            return None
        n = int(bytes(data))
        self.storage.put_data(f"result-{n}", b"done", is_result=True)
        return n

    def mode(self) -> str:
        return (
            f"journal={_journal_mode(self.path)}; synchronous="
            f"{_synchronous(self.storage.conn)} (fsync=True); dequeue deletes the row"
        )

    def close(self) -> None:
        self.storage.close()

    def verify(self, messages: int) -> bool:
        left = _count(self.path, "SELECT COUNT(*) FROM task")
        results = _count(self.path, "SELECT COUNT(*) FROM kv WHERE key LIKE 'result-%'")
        return left == 0 and results == messages


class LiteQueueAdapter:
    """litequeue.LiteQueue: put; consumer = pop + done."""

    name = "litequeue"
    label = "litequeue"
    table = "bench"

    def __init__(self, path: Path) -> None:
        self.path = path / "litequeue.db"
        self.q: Any = None

    def _queue(self) -> Any:
        q = LiteQueue(os.fspath(self.path), queue_name=self.table, timeout=60)
        # LiteQueue sets journal_mode=WAL and synchronous=NORMAL on its connection; raise it.
        q.conn.execute("PRAGMA synchronous = FULL")
        return q

    def create(self) -> None:
        self._queue().close()

    def open(self) -> None:
        self.q = self._queue()

    def enqueue(self, n: int) -> None:
        self.q.put(str(n))

    def consume(self) -> int | None:
        message = self.q.pop()
        if message is None:
            return None
        self.q.done(message.message_id)
        return int(message.data)

    def mode(self) -> str:
        return f"journal={_journal_mode(self.path)}; synchronous={_synchronous(self.q.conn)}"

    def close(self) -> None:
        self.q.close()

    def verify(self, messages: int) -> bool:
        done = _count(self.path, f"SELECT COUNT(*) FROM [{self.table}] WHERE status = 2")
        total = _count(self.path, f"SELECT COUNT(*) FROM [{self.table}]")
        return done == messages and total == messages


class PersistQueue:
    """persistqueue.SQLiteAckQueue: put; consumer = get + ack.

    Its get() SELECTs the next ready row, then UPDATEs it to unack in a separate
    statement, with only a threading lock between them: two processes can take
    the same row. Several consumer processes therefore take an exclusive flock
    around get() (ack needs none), which is what using it safely across
    processes requires.
    """

    name = "persist_queue"
    label = "persist-queue AckQ"

    def __init__(self, path: Path) -> None:
        self.dir = path / "persistqueue"
        self.path = self.dir / "data.db"
        self.lock_path = path / "persistqueue.lock"
        self.q: Any = None
        self.lock_fd: int | None = None

    def _queue(self, auto_resume: bool) -> Any:
        q: Any = SQLiteAckQueue(os.fspath(self.dir), auto_resume=auto_resume, timeout=60)
        # It opens WAL; synchronous is SQLite's default (FULL), set explicitly all the same.
        # Without multithreading=True its getter and putter are one connection.
        for conn in (q._getter, q._putter):
            conn.execute("PRAGMA synchronous = FULL")
        return q

    def create(self) -> None:
        self._queue(auto_resume=True).close()

    def open(self) -> None:
        self.q = self._queue(auto_resume=False)
        self.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    def enqueue(self, n: int) -> None:
        self.q.put(n)

    def consume(self) -> int | None:
        assert self.lock_fd is not None
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        try:
            item = self.q.get(block=False, raw=True)
        except Empty:
            return None
        finally:
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)
        self.q.ack(id=item["pqid"])
        return int(item["data"])

    def mode(self) -> str:
        return (
            f"journal={_journal_mode(self.path)}; synchronous={_synchronous(self.q._putter)}; "
            "get() under an flock across processes"
        )

    def close(self) -> None:
        self.q.close()
        if self.lock_fd is not None:
            os.close(self.lock_fd)

    def verify(self, messages: int) -> bool:
        table = "ack_queue_default"
        acked = _count(self.path, f"SELECT COUNT(*) FROM {table} WHERE status = 5")
        total = _count(self.path, f"SELECT COUNT(*) FROM {table}")
        return acked == messages and total == messages


SYSTEMS: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        Superagent,
        Huey,
        LiteQueueAdapter,
        PersistQueue,
        SuperagentAllFull,
        SuperagentCombined,
    )
}
