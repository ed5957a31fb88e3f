"""The crash test: real processes SIGKILLed at random on one inbox; nothing lost or doubled."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from control.queue import Queue
from tests.chaos import queue_chaos

SCRIPT = Path(queue_chaos.__file__)


@pytest.mark.slow
def test_kill_9_storm_loses_nothing_and_accepts_each_result_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--seconds", "8", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(result.stdout)  # the figures, re-executions included, are shown with -s
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0
    assert summary["duplicated_accepted"] == 0
    assert summary["unexpected"] == 0
    assert summary["integrity"] == "ok"
    assert summary["kills"] >= 16  # at least one kill every 0.5 s
    assert summary["detail"]["enqueued"] > 0
    assert summary["detail"]["done"] >= summary["detail"]["enqueued"]
    assert result.returncode == 0


def _history(workdir: Path, name: str, lines: list[str]) -> None:
    (workdir / f"{name}.history").write_text("".join(f"{line} .\n" for line in lines))


def test_checker_reports_lost_duplicated_and_unexpected(tmp_path: Path) -> None:
    """The checker itself can fail: feed it a history that a broken queue would leave."""
    db = tmp_path / "queue.db"
    with Queue(db) as queue:
        queue.enqueue({"key": "p-0"}, key="p-0")  # acknowledged, never finished: lost
        queue.enqueue({"key": "ghost"}, key="ghost")  # done, but nobody sent it
        claimed = queue.claim("c", 60)
        assert claimed
        queue.complete(claimed.id, claimed.fence, {"key": "p-0"})  # wrong key answered
        ghost = queue.claim("c", 60)
        assert ghost
        queue.complete(ghost.id, ghost.fence, {"key": "ghost"})
    conn = sqlite3.connect(db)
    conn.execute("UPDATE messages SET state = 'pending' WHERE key = 'p-0'")
    conn.commit()
    conn.close()
    _history(tmp_path, "producer-0", ["intent p-0", "enqueued p-0 1 0"])
    _history(tmp_path, "consumer-0", ["claimed 2 1 ghost", "completed 2 1 1", "completed 2 1 1"])
    result = queue_chaos.check(db, tmp_path, kills=0, integrity_results=["ok", "bad page"])
    assert result["lost"] == 1
    assert result["duplicated_accepted"] == 1
    assert result["unexpected"] == 1
    assert result["integrity"] == "bad page"


def test_torn_history_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.history"
    path.write_text("intent a .\nenqueued a 1 0 .\nintent b")
    assert queue_chaos._read_history(path) == [
        ["intent", "a", "."],
        ["enqueued", "a", "1", "0", "."],
    ]
