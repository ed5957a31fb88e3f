"""The state store's connection, its write transactions and its events: what every part
of the store (runs, attempts, the fleet, ...) is built on."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from control import db
from control.errors import UnavailableError
from control.events import write as write_event
from control.state.migrations import MIGRATIONS


class StoreBase:
    """One connection to the state database; one per orchestrator process."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.clock = clock
        self.conn = db.connect(self.path, create=True, what="state database")
        db.migrate(self.conn, MIGRATIONS, what=f"state database {self.path}")

    @classmethod
    def read_only(cls, path: Path, *, clock: Callable[[], float] = time.time) -> Self:
        """The state database opened for reading only (the web dashboard): no migration,
        no file created, and every write refused by SQLite itself."""
        store = cls.__new__(cls)
        store.path = Path(path)
        store.clock = clock
        store.conn = db.connect_read_only(store.path, what="state database")
        version = int(store.conn.execute("PRAGMA user_version").fetchone()[0])
        if version != len(MIGRATIONS):
            store.conn.close()
            newer = "newer than this superagent knows" if version > len(MIGRATIONS) else "older"
            raise UnavailableError(
                f"{store.path}: state database schema version {version} is {newer} "
                f"(expected {len(MIGRATIONS)}); any `control` command that writes it migrates it"
            )
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, *, durable: bool = True) -> Any:
        """A write transaction; `durable=False` commits with synchronous=NORMAL, for what
        the next poll derives again anyway (a worker's liveness row)."""
        return db.write_transaction(self.conn, "full" if durable else "normal")

    def _event(
        self, conn: sqlite3.Connection, run_id: str | None, kind: str,
        phase_id: str | None = None, worker: str | None = None, detail: Any = None,
    ) -> None:  # fmt: skip
        """An event inside the caller's write transaction, stamped by the store's clock."""
        write_event(conn, self.clock(), run_id, kind, phase_id, worker, detail)

    def event(
        self, run_id: str | None, kind: str,
        phase_id: str | None = None, worker: str | None = None, detail: Any = None,
    ) -> None:  # fmt: skip
        """An event in a transaction of its own."""
        with self.write() as conn:
            self._event(conn, run_id, kind, phase_id, worker, detail)
