"""`make demo` as a user runs it: three workers, the tiny spec, a merged branch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_runs_to_a_merged_branch_and_says_where_everything_is(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "control.demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "phase_done phase=greeting" in out and "phase_done phase=shout" in out
    assert "where everything is:" in out
    # the final check (merge, then each distinct verify command once) ran on a worker
    assert re.search(r"merged branch=\S+ commit=\S+ worker=(server|laptop|wsl) checks=2", out), out
    remote = tmp_path / "demo" / "origin.git"
    found = re.search(r"done; merged into (\S+) at", out)
    assert found, out[-2000:]
    branch = found.group(1)
    shown = subprocess.run(
        ["git", "-C", str(remote), "show", f"{branch}:HELLO.txt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == "HELLO FROM SUPERAGENT.\n"
    status = subprocess.run(
        [sys.executable, "-m", "control", "status", "--state", str(tmp_path / "demo" / "state.db")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "greeting" in status and "done" in status
    # Every command the demo prints works as printed, with the control of this environment.
    printed = re.findall(r"^  (control \S+ --state \S+)$", out, re.MULTILINE)
    assert len(printed) == 2, out
    bindir = str(Path(sys.executable).parent)
    for command in printed:
        done = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            env={**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")},
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
