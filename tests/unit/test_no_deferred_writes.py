"""No write transaction anywhere starts DEFERRED (the read-then-write SQLITE_BUSY trap).

A DEFERRED transaction that reads and then writes can fail with SQLITE_BUSY at
the write, which busy_timeout cannot fix. Two checks: every statement the inbox
sends while doing everything it can do is traced, and the source is scanned.
"""

from __future__ import annotations

import re
from pathlib import Path

from control.queue import Queue
from tests.conftest import Clock

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|ALTER|DROP)\b", re.IGNORECASE)
PACKAGE = Path(__file__).resolve().parents[2] / "control"


def _exercise(queue: Queue, clock: Clock) -> None:
    a = queue.enqueue({"n": 1}, key="a")
    queue.enqueue({"n": 1}, key="a")
    queue.enqueue({"n": 2})
    queue.enqueue({"n": 2})
    queue.enqueue({"n": 3}, max_attempts=1)
    first = queue.claim("w", 10)
    assert first
    queue.renew(first.id, first.fence, 10)
    queue.complete(first.id, first.fence, {"ok": 1})
    queue.complete(first.id, first.fence, {"late": 1})
    second = queue.claim("w", 10)
    assert second
    queue.fail(second.id, second.fence, "broken", {"x": 1})
    third = queue.claim("w", 10)
    assert third
    queue.cancel(third.id)
    queue.release(third.id, third.fence, "stopping")
    queue.cancel(key="never-sent")
    queue.beat("w", "idle", versions={"node": "v20"})
    queue.ack(a.id)
    queue.requeue(second.id)
    clock.advance(20)
    queue.claim("w", 10)
    clock.advance(20)
    queue.requeue_expired()
    queue.release_expired_of("w")
    queue.responses()
    queue.stats()
    queue.prune(0)


def test_every_traced_write_runs_inside_begin_immediate(tmp_path: Path) -> None:
    clock = Clock()
    statements: list[str] = []
    queue = Queue(tmp_path / "q.db", clock=clock)
    queue._conn.set_trace_callback(statements.append)
    _exercise(queue, clock)
    queue.close()

    in_transaction = False
    writes = 0
    for statement in statements:
        text = statement.strip().upper()
        assert not re.match(r"BEGIN(\s+DEFERRED)?\s*(TRANSACTION)?\s*$", text), statement
        if text.startswith("BEGIN"):
            assert text == "BEGIN IMMEDIATE", statement
            in_transaction = True
        elif text in ("COMMIT", "ROLLBACK"):
            in_transaction = False
        elif WRITE.match(statement):
            writes += 1
            assert in_transaction, f"write outside BEGIN IMMEDIATE: {statement}"
    assert writes > 20  # the exercise really wrote


def test_the_source_never_begins_a_transaction_other_than_immediate() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{number}: {line.strip()}"
            for match in re.finditer(r"[\"']\s*BEGIN(\s+\w+)?\s*;?\s*[\"']", line, re.I):
                if (match.group(1) or "").strip().upper() != "IMMEDIATE":
                    offenders.append(where)
            if ".executescript(" in line:
                offenders.append(where)
            if re.search(r"isolation_level\s*=\s*(?!None)", line):
                offenders.append(where)
    assert offenders == []


def test_only_the_db_module_opens_sqlite_connections() -> None:
    openers = [
        path.name
        for path in PACKAGE.rglob("*.py")
        if "sqlite3.connect(" in path.read_text() and path.name != "db.py"
    ]
    assert openers == []
