"""The queue benchmark runs end to end on a few messages and ends with its JSON line.

No figure is asserted: timings on a shared machine prove nothing. What is checked
is that every system ran, each at both process counts, and processed every
message exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_queue.py"
SYSTEMS = ("superagent", "huey", "litequeue", "persist_queue")


@pytest.mark.slow
def test_bench_queue_smoke(tmp_path: Path) -> None:
    figures = run_script_json(
        BENCH, "--messages", "50", "--rounds", "1", "--limit-seconds", "0.2", "--dir", str(tmp_path)
    )
    for system in SYSTEMS:
        for key in (
            f"{system}_enqueue_per_s",
            f"{system}_enqueue_per_s_4p",
            f"{system}_claim_complete_per_s",
            f"{system}_claim_complete_per_s_4p",
        ):
            assert isinstance(figures[key], float), key
            assert figures[key] > 0, key
        assert figures["exactly_once_by_system"][system] == {"1p": True, "4p": True}
    for key in (
        "superagent_all_full_claim_complete_per_s",
        "superagent_combined_claim_complete_per_s_4p",
        "full_commit_limit_per_s",
    ):
        assert figures[key] > 0, key
    assert figures["superagent_vs_limit"] > 0
    assert figures["exactly_once"] is True
    assert list(tmp_path.iterdir()) == []  # the bench cleaned up after itself
