"""The process runner: real child processes, their logs, and the watchdogs that end them."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from control.errors import UsageError
from control.process import (
    REDACTED,
    ProcessOutcome,
    Redactor,
    as_cancel_check,
    run_watched,
)

PY = sys.executable


def _run(tmp_path: Path, code: str, **kwargs: Any) -> tuple[ProcessOutcome, str]:
    log = tmp_path / "run.log"
    options: dict[str, Any] = {"wall_timeout_s": 30.0, "kill_grace_s": 1.0, **kwargs}
    outcome = run_watched(
        [PY, "-c", code], cwd=tmp_path, env=dict(os.environ), log_path=log, **options
    )
    return outcome, log.read_text()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_output_is_logged_and_the_exit_code_kept(tmp_path: Path) -> None:
    code = "import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)"
    outcome, log = _run(tmp_path, code, log_header=["header line"])
    assert outcome.exit_code == 3
    assert not outcome.ended_by_watchdog
    assert "hello" in outcome.stdout_tail
    assert "oops" in outcome.stderr_tail
    lines = log.splitlines()
    assert lines[0] == "# header line"
    assert "hello" in lines
    assert "[stderr] oops" in lines
    assert lines[-1].startswith("# process exited; exit code 3")


def test_the_prompt_arrives_on_stdin(tmp_path: Path) -> None:
    prompt = "x" * 300_000  # bigger than a pipe's buffer
    code = "import sys; data = sys.stdin.read(); print(len(data))"
    outcome, _ = _run(tmp_path, code, stdin_data=prompt.encode())
    assert outcome.stdout_tail.strip() == "300000"


def test_lines_are_handed_on_as_they_come(tmp_path: Path) -> None:
    seen: list[str] = []
    code = "print('a'); print('b', end='')"
    _run(tmp_path, code, on_stdout_line=seen.append)
    assert seen == ["a", "b"]


def test_wall_clock_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "while True:\n    print('tick', flush=True); time.sleep(0.1)\n"
    )
    outcome, log = _run(tmp_path, code, wall_timeout_s=1.0, silence_timeout_s=10.0)
    assert outcome.timed_out and not outcome.silent
    assert outcome.exit_code == -15
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
    assert "wall-clock timeout" in log


def test_silence_watchdog(tmp_path: Path) -> None:
    code = "import time; print('started', flush=True); time.sleep(300)"
    outcome, log = _run(tmp_path, code, silence_timeout_s=0.8)
    assert outcome.silent and not outcome.timed_out
    assert "no output for 0.8s" in log


def test_sigterm_ignored_means_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(300)\n"
    )
    outcome, _ = _run(tmp_path, code, silence_timeout_s=0.5, kill_grace_s=0.5)
    assert outcome.silent and outcome.killed
    assert outcome.exit_code == -9


def test_cancel_with_an_event(tmp_path: Path) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    outcome, log = _run(tmp_path, "import time; time.sleep(300)", cancel=cancel)
    assert outcome.cancelled
    assert "process cancelled" in log


def test_cancel_with_a_callable(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome, _ = _run(
        tmp_path, "import time; time.sleep(300)", cancel=lambda: time.monotonic() - started > 0.3
    )
    assert outcome.cancelled


def test_a_child_left_behind_after_a_normal_exit_is_ended(tmp_path: Path) -> None:
    pid_file = tmp_path / "left.pid"
    code = (
        "import subprocess\n"
        f"p = subprocess.Popen([{PY!r}, '-c', 'import time; time.sleep(300)'],"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
    )
    outcome, _ = _run(tmp_path, code)
    assert outcome.exit_code == 0
    left = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(left)


def test_secrets_are_masked_in_the_log_and_the_tails(tmp_path: Path) -> None:
    secret = "sk-ant-very-secret-value"
    code = f"import sys; print('key={secret}'); print({secret!r}, file=sys.stderr)"
    outcome, log = _run(tmp_path, code, secrets=[secret])
    assert secret not in log
    assert f"key={REDACTED}" in log
    assert secret not in outcome.stdout_tail + outcome.stderr_tail


def test_a_missing_program_is_an_outcome_not_an_exception(tmp_path: Path) -> None:
    outcome = run_watched(
        [str(tmp_path / "nope")], cwd=tmp_path, env={}, log_path=tmp_path / "x.log",
        wall_timeout_s=5,
    )  # fmt: skip
    assert outcome.exit_code is None
    assert outcome.start_error and "could not start" in outcome.start_error


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        run_watched([], cwd=tmp_path, env={}, log_path=tmp_path / "x.log", wall_timeout_s=1)
    with pytest.raises(UsageError):
        run_watched(["true"], cwd=tmp_path, env={}, log_path=tmp_path / "x.log", wall_timeout_s=0)


def test_redactor_masks_longest_first_and_ignores_tiny_values() -> None:
    redact = Redactor(["abcd", "abcdefgh", "x"])
    assert redact("abcdefgh abcd x") == f"{REDACTED} {REDACTED} x"


def test_as_cancel_check() -> None:
    assert as_cancel_check(None)() is False
    event = threading.Event()
    check = as_cancel_check(event)
    assert check() is False
    event.set()
    assert check() is True
