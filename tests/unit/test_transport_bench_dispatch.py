"""The dispatch benchmark runs end to end on a few samples and ends with its JSON line.

No figure is asserted: timings on a shared machine prove nothing. What is checked is
that every transport available here was measured and that the bench cleaned up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet.harness import build_wheels
from tests.sshd import sshd_problem
from tests.support import run_script_json

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_dispatch.py"


@pytest.mark.slow
def test_bench_dispatch_smoke(tmp_path: Path) -> None:
    figures = run_script_json(
        BENCH,
        "--samples",
        "5",
        "--ssh-samples",
        "3",
        "--ansible-samples",
        "1",
        "--fanout",
        "2",
        "--ansible-hosts",
        "3",
        "--workers",
        "3,10",
        "--dir",
        str(tmp_path),
        "--worker-wheels",
        str(build_wheels()),  # the ansible hosts' venv, as the worker role installs it
    )
    keys = ["local_median_ms", "local_p99_ms", "ansible_median_ms", "ansible_fanout_1_ms"]
    keys += ["plain_ansible_1_ms", "plain_ansible_ping_1_ms", "ansible_fanout_3_ms"]
    keys += ["tick_cpu_ms_per_worker_3", "tick_cpu_ms_per_worker_10"]
    if sshd_problem() is None:
        keys += ["ssh_median_ms", "ssh_p99_ms", "ssh_tick_cpu_ms_per_worker_2"]
        assert figures["ssh_connects"] == 2
    for key in keys:
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["ansible_calls_per_poll"] == 1
    assert list(tmp_path.iterdir()) == []
