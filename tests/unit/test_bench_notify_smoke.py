"""The notification benchmark runs end to end on a few events and ticks and ends with
its JSON line. No figure is asserted (timings on a shared machine prove nothing)."""

from __future__ import annotations

from pathlib import Path

from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_notify.py"


def test_bench_notify_smoke() -> None:
    figures = run_script_json(BENCH, "--events", "10", "--ticks", "3", "--rounds", "2", timeout=300)
    assert set(figures) == {"notify_median_ms", "notify_p99_ms", "tick_overhead_ms"}
    assert figures["notify_median_ms"] > 0
