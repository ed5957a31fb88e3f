"""What superagent creates holds task text, agent output and responses: the state
database, the inboxes and the logs are created 0600 in 0700 directories, whatever
the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.process import run_watched
from control.queue import Queue
from control.state import StateStore


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_database_is_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "orchestrator" / "state.db")
    store.conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
    assert mode(tmp_path / "orchestrator") == 0o700
    for path in (tmp_path / "orchestrator").iterdir():
        assert mode(path) == 0o600, path


def test_an_inbox_is_private(tmp_path: Path) -> None:
    with Queue(tmp_path / "queue.db") as queue:
        queue.enqueue({"type": "freeform", "text": "x"}, key="k")
    for path in tmp_path.glob("queue.db*"):
        assert mode(path) == 0o600, path


def test_a_log_is_private(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "1-a-a1.log"
    run_watched(["/bin/echo", "hi"], cwd=tmp_path, env={}, log_path=log, wall_timeout_s=10)
    assert mode(log.parent) == 0o700 and mode(log) == 0o600
    assert "hi" in log.read_text()
