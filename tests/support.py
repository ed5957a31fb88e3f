"""Helpers for tests that need something from the machine (root, a package, a tool).

Outside CI such a test skips with the reason; in CI (`CI` set) a missing need is a
failure, because CI is where the whole system must be shown to work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def need(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) unless `condition` holds."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"needed in CI: {reason}")
    pytest.skip(reason)


def run_script_json(script: Path, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run a bench or chaos script with this Python; the figures of its last line, which
    every such script prints as JSON. A failed run fails the test with its output's tail."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    tail = f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}"
    assert done.returncode == 0, f"{script.name} exited {done.returncode}\n{tail}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script.name} printed nothing\n{tail}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict), f"{script.name}'s last line is not a JSON object\n{tail}"
    return figures


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (agents run in their own sessions, so a process group
    would not reach them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (a dead process whose parent,
    here often the container's PID 1, has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_tree(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """`sig` to a process and everything below it, as a powered-off machine would."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)


def dispatch_replay(
    spec: Path,
    *,
    inventory: Path,
    state: Path,
    remote: Path,
    replay_dir: Path,
    env: dict[str, str],
    timeout_s: float = 900,
) -> subprocess.CompletedProcess[str]:
    """`control dispatch --json` of an example spec with the replay agent, to its end."""
    return subprocess.run(
        [
            sys.executable, "-m", "control", "dispatch", str(spec),
            "--inventory", str(inventory), "--state", str(state), "--repo", str(remote),
            "--agent", "replay", "--replay-dir", str(replay_dir),
            "--poll-interval", "0.2", "--timeout", str(timeout_s), "--json",
        ],
        capture_output=True, text=True, timeout=timeout_s + 100,
        env={**os.environ, **env}, check=False,
    )  # fmt: skip
