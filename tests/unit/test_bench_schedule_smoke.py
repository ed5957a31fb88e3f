"""The scheduling benchmark runs end to end on a few DAGs and ends with its JSON line.

No figure is asserted (timings on a shared machine prove nothing); the random
DAGs it draws are checked to be what the benchmark says they are.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_schedule.py"
KEYS = {
    "mean_ratio",
    "p95_ratio",
    "fcfs_mean_ratio",
    "fcfs_p95_ratio",
    "contention_mean_ratio",
    "before_contention_mean_ratio",
    "fcfs_contention_mean_ratio",
    "rare_idle_when_needed_share",
    "before_rare_idle_when_needed_share",
    "validate_1000_s",
    "plan_10000_s",
    "plan_10000_wall_s",
}


def test_bench_schedule_smoke() -> None:
    figures = run_script_json(
        BENCH, "--dags", "3", "--repeats", "1", "--plan-phases", "200", timeout=300
    )
    assert set(figures) == KEYS
    assert figures["mean_ratio"] >= 1 and figures["fcfs_mean_ratio"] >= 1
    assert figures["contention_mean_ratio"] >= 1 and figures["before_contention_mean_ratio"] >= 1
    assert 0 <= figures["rare_idle_when_needed_share"] <= 1


def test_random_dags_are_in_range_and_runnable() -> None:
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_schedule import (  # noqa: PLC0415
            SCARCE,
            random_dag,
            random_fleet,
            with_contention,
        )
    finally:
        sys.path.remove(str(BENCH.parent))
    rng = random.Random(7)
    for _ in range(20):
        workers = random_fleet(rng)
        works = random_dag(rng, workers)
        assert 2 <= len(workers) <= 20 and 20 <= len(works) <= 300
        ids = [w.id for w in works]
        for index, work in enumerate(works):
            assert set(work.depends_on) <= set(ids[:index])  # acyclic by construction
            assert any(work.requires <= w.capabilities for w in workers)
            assert work.pin is None or work.requires <= next(
                w.capabilities for w in workers if w.name == work.pin
            )
        late_works, late_workers = with_contention(rng, works, workers)
        assert [w.id for w in late_works] == ids  # the same graph
        assert [(w.name, w.slots) for w in late_workers] == [(w.name, w.slots) for w in workers]
        assert all(w.slot_cost == 0.5 for w in late_workers)
        holders = {w.name for w in late_workers if SCARCE in w.capabilities}
        assert 1 <= len(holders) <= max(1, len(workers) // 10)
        for index, work in enumerate(late_works):
            if SCARCE in work.requires:
                assert index >= len(works) * 2 // 3 and work.pin is None  # needed late
