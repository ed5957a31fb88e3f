"""The accounts benchmark runs end to end on a small day and ends with its JSON line.

No figure about speed is asserted; what the simulation must hold whatever the machine is
checked: every phase done when no budget binds, and nothing spent past a budget.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_accounts.py"


def test_bench_accounts_smoke() -> None:
    figures = run_script_json(BENCH, "--phases", "40", "--seed", "3", timeout=300)
    assert {"makespan_ratio_vs_one_account", "budget_overshoot_usd", "idle_account_minutes"} <= set(
        figures
    )
    assert figures["budget_overshoot_usd"] == 0.0
    assert figures["capped_stopped_by_budget"] is True
    spent = figures["spent_usd"]
    assert spent["three"] == spent["one"] == spent["no_fallback"] > spent["capped"]
