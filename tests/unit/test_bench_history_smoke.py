"""The history benchmark runs end to end on a small history and ends with its JSON line;
the history it builds is what it says (counts read back from the database)."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_history.py"
KEYS = {"status_ms", "runs_ms", "tick_ms", "state_db_mb", "gc_s", "health_ms", "run_page_ms",
        "runs_page_ms"}  # fmt: skip


def test_bench_history_smoke() -> None:
    figures = run_script_json(
        BENCH, "--runs", "30", "--inbox-history", "100", "--samples", "2", timeout=300
    )
    assert set(figures) >= KEYS
    assert figures["runs"] == 30 and figures["gc_runs"] > 0


def test_the_history_holds_what_it_says(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_history import (  # noqa: PLC0415
            ATTEMPTS_PER_RUN,
            EVENTS_PER_RUN,
            fill_history,
        )
    finally:
        sys.path.remove(str(BENCH.parent))
    fill_history(tmp_path / "state.db", 12, now=time.time())
    conn = sqlite3.connect(tmp_path / "state.db")
    counts = [
        conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("runs", "attempts", "events")
    ]
    conn.close()
    assert counts == [12, 12 * ATTEMPTS_PER_RUN, 12 * EVENTS_PER_RUN]
