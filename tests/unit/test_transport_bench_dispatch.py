"""The dispatch benchmark runs end to end on a few samples and ends with its JSON line.

No figure is asserted: timings on a shared machine prove nothing. What is checked is
that every transport available here was measured and that the bench cleaned up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import sshd_problem

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_dispatch.py"


@pytest.mark.slow
def test_bench_dispatch_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--samples",
            "5",
            "--ssh-samples",
            "3",
            "--ansible-samples",
            "1",
            "--fanout",
            "2",
            "--workers",
            "3,10",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    keys = ["local_median_ms", "local_p99_ms", "ansible_median_ms"]
    keys += ["tick_cpu_ms_per_worker_3", "tick_cpu_ms_per_worker_10"]
    if sshd_problem() is None:
        keys += ["ssh_median_ms", "ssh_p99_ms", "ssh_tick_cpu_ms_per_worker_2"]
        assert figures["ssh_connects"] == 2
    for key in keys:
        assert isinstance(figures[key], float) and figures[key] > 0, key
    assert figures["ansible_calls_per_poll"] == 1
    assert list(tmp_path.iterdir()) == []
