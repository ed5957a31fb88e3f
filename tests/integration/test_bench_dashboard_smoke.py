"""The dashboard benchmark runs end to end on a few loads, events and clients and ends
with its JSON line. No figure is asserted (timings on a shared machine prove nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard import have_chromium
from tests.support import need, run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_dashboard.py"


@pytest.mark.slow
def test_bench_dashboard_smoke() -> None:
    need(have_chromium(), "Debian's chromium and chromium-driver (tests/setup-system.sh)")
    args = ("--loads", "1", "--events", "2", "--clients", "2", "--seconds", "2")
    figures = run_script_json(BENCH, *args, timeout=300)
    assert {"run_page_ms", "event_to_screen_ms", "cpu_ms_per_client_min"} <= set(figures)
    assert figures["phases"] == 1000 and figures["runs"] == 101
