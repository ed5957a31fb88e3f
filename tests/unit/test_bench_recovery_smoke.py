"""The recovery benchmark runs end to end on a few phases and ends with its JSON line;
without feedback and checkpoints nothing is saved, and no conflict gets through."""

from __future__ import annotations

from pathlib import Path

from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_recovery.py"


def test_bench_recovery_smoke() -> None:
    figures = run_script_json(BENCH, "--phases", "20", "--conflicts", "2", timeout=300)
    assert {"agent_minutes_ratio_vs_scratch", "lost_minutes_per_machine_loss",
            "conflicts_resolved_share"} <= set(figures)  # fmt: skip
    assert figures["recover_agent_minutes"] <= figures["scratch_agent_minutes"]
    assert figures["resolved_share"] == 1.0 and figures["resolved_share_without"] == 0.0
    # every phase breaking the integration beside another is found by the merge queue
    assert figures["queue_culprits_found"] == 3 and figures["queue_checks"] > 3
