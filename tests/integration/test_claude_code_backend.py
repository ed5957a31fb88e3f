"""The claude-code backend against a fake `claude` that speaks the real CLI's flags and JSON.

Every test runs a real process; the hang and silence tests use watchdogs of a second
or two and assert what ended the run, never how long it took.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from control.errors import UnavailableError
from control.worker.agents import get_backend, run_agent
from control.worker.agents.claude_code import (
    PINNED_VERSION,
    check_claude_version,
    claude_version,
)
from control.worker.prompt import completion_marker
from tests.fakes.agents import API_KEY, FAKE_CLAUDE, claude_request, credential_file, dumped

BACKEND = get_backend("claude-code")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_success_runs_in_the_checkout_and_reads_the_result(tmp_path: Path) -> None:
    request = claude_request(
        tmp_path,
        {"scenario": "success", "files": {"app/health.py": "def health(): ...\n"}},
        options={
            "model": "sonnet",
            "permission_mode": "acceptEdits",
            "allowed_tools": ["Read", "Edit", "Bash(pytest *)"],
            "max_turns": 30,
            "max_budget_usd": 2.5,
        },
    )
    result = BACKEND.run(request)

    assert result.status == "ok", result.reason
    assert (request.checkout / "app" / "health.py").is_file()
    assert result.cost_usd == pytest.approx(0.0421)
    assert result.num_turns == 3
    assert result.usage == {
        "input_tokens": 1200,
        "output_tokens": 600,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert result.session_id and len(result.session_id) == 36
    assert result.duration_ms is not None
    assert result.exit_code == 0
    assert result.subtype == "success"
    assert result.permission_denials == ()
    assert result.log_path == request.log_path
    assert result.result_text and completion_marker("build-api") in result.result_text
    seen = dumped(tmp_path)
    assert seen["cwd"] == str(request.checkout)
    argv = seen["argv"]
    assert argv[:4] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--model") + 1] == "sonnet"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--allowedTools") + 1] == "Read,Edit,Bash(pytest *)"
    assert argv[argv.index("--max-turns") + 1] == "30"
    assert argv[argv.index("--max-budget-usd") + 1] == "2.5"
    assert seen["env"]["DISABLE_AUTOUPDATER"] == "1"


def test_the_prompt_goes_on_stdin_never_in_argv(tmp_path: Path) -> None:
    request = claude_request(tmp_path)
    BACKEND.run(request)
    seen = dumped(tmp_path)
    assert seen["prompt"] == request.prompt()
    assert request.phase.task in seen["prompt"]
    assert "sa/scaffold" in seen["prompt"]
    assert not any(request.phase.task in arg or "/health" in arg for arg in seen["argv"])


def test_the_credential_reaches_the_environment_only(tmp_path: Path) -> None:
    request = claude_request(tmp_path, "echo_secret")
    result = BACKEND.run(request)
    seen = dumped(tmp_path)

    assert seen["credentials"]["ANTHROPIC_API_KEY"] is True
    assert (
        seen["credential_sha256"]["ANTHROPIC_API_KEY"]
        == hashlib.sha256(API_KEY.encode()).hexdigest()
    )
    assert not any(API_KEY in arg for arg in seen["argv"])
    log = request.log_path.read_text()
    assert API_KEY not in log
    assert "[REDACTED]" in log  # the fake printed it; the log masked it
    assert API_KEY not in json.dumps(result.to_dict())


def test_a_credential_file_wins_over_the_workers_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "stray-key-of-the-worker")
    request = claude_request(tmp_path)
    token_file = credential_file(tmp_path, "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-TOKEN-abcdef\n")
    assert request.credential_file == token_file  # the same file, now holding a token
    result = BACKEND.run(request)
    assert result.status == "ok", result.reason
    seen = dumped(tmp_path)
    assert seen["credentials"] == {
        "ANTHROPIC_API_KEY": False,
        "CLAUDE_CODE_OAUTH_TOKEN": True,
        "ANTHROPIC_AUTH_TOKEN": False,
    }


def test_a_world_readable_credential_file_is_refused(tmp_path: Path) -> None:
    request = claude_request(tmp_path)
    credential_file(tmp_path, mode=0o644)
    result = BACKEND.run(request)
    assert result.status == "failed"
    assert "0600" in result.reason
    assert API_KEY not in result.reason


def test_is_error_is_a_failure(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, "is_error"))
    assert result.status == "failed"
    assert "API Error: 500" in result.reason
    assert "(success)" not in result.reason  # the subtype of an error result says nothing
    assert result.exit_code == 1


def test_error_max_turns_is_a_failure(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, "error_max_turns"))
    assert result.status == "failed"
    assert result.subtype == "error_max_turns"
    assert "maximum number of turns" in result.reason
    assert result.cost_usd is not None


def test_max_turns_from_the_spec_is_honoured(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, options={"max_turns": 1}))
    assert result.status == "failed"
    assert result.subtype == "error_max_turns"
    assert "Reached maximum number of turns (1)" in result.reason


def test_budget_from_the_spec_is_honoured(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, options={"max_budget_usd": 0.01}))
    assert result.status == "failed"
    assert result.subtype == "error_max_budget_usd"


def test_rate_limit_reported_as_success_with_exit_0(tmp_path: Path) -> None:
    reset = int(time.time()) + 7200
    result = BACKEND.run(claude_request(tmp_path, {"scenario": "rate_limit", "reset_epoch": reset}))
    assert result.exit_code == 0
    assert result.status == "rate_limited"
    assert result.rate_limit_reset == reset


def test_rate_limit_event_gives_the_reset_time(tmp_path: Path) -> None:
    reset = int(time.time()) + 1800
    scenario = {"scenario": "rate_limit_event", "reset_epoch": reset}
    result = BACKEND.run(claude_request(tmp_path, scenario))
    assert result.status == "rate_limited"
    assert result.rate_limit_reset == reset
    assert "session limit" in result.reason


def test_an_informational_rate_limit_warning_is_not_a_failure(tmp_path: Path) -> None:
    """Near a limit Claude Code says so (`allowed_warning`) and serves the request: only
    a rejection is a rate limit."""
    scenario = {"scenario": "success", "rate_limit_warning": True}
    result = BACKEND.run(claude_request(tmp_path, scenario))
    assert result.status == "ok", result.reason
    assert result.rate_limit_reset is None
    assert "allowed_warning" in result.log_path.read_text()  # it was there, and read


def test_bare_rate_limit_text_with_exit_0(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, "rate_limit_text"))
    assert result.exit_code == 0
    assert result.status == "rate_limited"
    assert result.rate_limit_reset is not None and result.rate_limit_reset > time.time()


def test_garbage_output_with_exit_0_is_a_failure(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, "garbage"))
    assert result.exit_code == 0
    assert result.status == "failed"
    assert "not JSON" in result.reason


def test_an_answer_to_no_prompt_is_a_failure(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, "no_prompt_seen"))
    assert result.exit_code == 0
    assert result.status == "failed"
    assert "completion marker" in result.reason


def test_the_marker_can_be_made_a_warning(tmp_path: Path) -> None:
    request = claude_request(
        tmp_path, "no_prompt_seen", options={"require_completion_marker": False}
    )
    result = BACKEND.run(request)
    assert result.status == "ok"
    assert any("completion marker" in w for w in result.warnings)


def test_permission_denials_are_reported(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, "denied"))
    assert result.status == "ok"
    assert result.permission_denials[0]["tool_name"] == "Bash"
    assert any("denied" in w for w in result.warnings)


def test_writes_outside_the_checkout_are_not_the_backends_to_judge(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    result = BACKEND.run(
        claude_request(tmp_path, {"scenario": "outside", "outside_path": str(outside)})
    )
    # The agent ran and said it succeeded; the worker's checks of the checkout decide the rest.
    assert result.status == "ok"
    assert outside.is_file()


def test_not_logged_in_is_a_failure(tmp_path: Path) -> None:
    request = claude_request(
        tmp_path,
        with_credentials=False,
        env={"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": "", "ANTHROPIC_AUTH_TOKEN": ""},
    )
    result = BACKEND.run(request)
    assert result.status == "failed"
    assert "Not logged in" in result.reason
    assert "(success)" not in result.reason
    assert "ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN" in result.reason  # what to set


def test_a_hang_is_ended_by_the_wall_clock(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    scenario = {"scenario": "hang", "child_pid_file": str(child_pid_file)}
    request = claude_request(tmp_path, scenario, wall_timeout_s=1.5, silence_timeout_s=None)
    result = BACKEND.run(request)
    assert result.status == "timeout"
    assert "wall-clock" in result.reason
    # The agent's own children went with it: the whole process group was signalled.
    child = int(child_pid_file.read_text())
    deadline = time.monotonic() + 5
    while _pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(child)
    assert "wall-clock timeout" in request.log_path.read_text()


def test_silence_is_ended_by_the_watchdog(tmp_path: Path) -> None:
    request = claude_request(tmp_path, "silence", wall_timeout_s=60, silence_timeout_s=1.0)
    result = BACKEND.run(request)
    assert result.status == "timeout"
    assert "printed nothing" in result.reason
    assert result.session_id  # from the init event it did print


def test_a_hang_after_the_result_keeps_the_result(tmp_path: Path) -> None:
    request = claude_request(
        tmp_path, "hang_after_result", options={"exit_grace_s": 0.5}, wall_timeout_s=60
    )
    result = BACKEND.run(request)
    assert result.status == "ok", result.reason
    assert any("did not exit" in w for w in result.warnings)
    assert "after its final result" in request.log_path.read_text()


def test_sigterm_ignored_ends_with_sigkill(tmp_path: Path) -> None:
    scenario = {"scenario": "silence", "ignore_sigterm": True}
    request = claude_request(tmp_path, scenario, wall_timeout_s=60, silence_timeout_s=1.0)
    # Ignored here, SIGTERM is ignored in the child from its first instruction (a disposition
    # survives exec): on a loaded machine the fake may not reach its own signal() call
    # within the 1 s of silence, and the watchdog's SIGTERM would end it (-15).
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        result = BACKEND.run(request)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.status == "timeout"
    assert result.exit_code == -9
    assert "SIGKILL" in request.log_path.read_text()


def test_cancel_stops_the_run(tmp_path: Path) -> None:
    cancel = threading.Event()
    request = claude_request(tmp_path, "hang", wall_timeout_s=60, cancel=cancel)
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        result = BACKEND.run(request)
    finally:
        timer.cancel()
    assert result.status == "cancelled"


def test_missing_executable_is_a_clear_failure(tmp_path: Path) -> None:
    request = claude_request(tmp_path, env={"PATH": str(tmp_path)})
    result = BACKEND.run(request)
    assert result.status == "failed"
    assert "not found" in result.reason


def test_json_output_format_works_too(tmp_path: Path) -> None:
    result = BACKEND.run(claude_request(tmp_path, options={"output_format": "json"}))
    assert result.status == "ok", result.reason
    assert dumped(tmp_path)["argv"][:3] == ["-p", "--output-format", "json"]


def test_the_log_keeps_every_event_and_the_response_names_it(tmp_path: Path) -> None:
    request = claude_request(tmp_path)
    (request.log_path.parent).mkdir(parents=True)
    old = request.log_path.parent / "0-old-a1.log"
    old.write_text("old\n")
    result = run_agent("claude-code", request, keep_logs=1)
    assert result.to_dict()["log_path"] == str(request.log_path)
    lines = request.log_path.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    assert events[0]["type"] == "system"
    assert events[-1]["type"] == "result"
    assert not old.exists()  # rotated away, this run's log kept


def test_version_check_reads_the_real_format() -> None:
    env = {**os.environ, "PATH": f"{FAKE_CLAUDE.parent}{os.pathsep}{os.environ['PATH']}"}
    assert claude_version("claude", env=env) == PINNED_VERSION
    assert check_claude_version(PINNED_VERSION, "claude", env=env) == PINNED_VERSION
    with pytest.raises(UnavailableError, match=r"pinned to 9\.9\.9"):
        check_claude_version("9.9.9", "claude", env=env)
    with pytest.raises(UnavailableError, match="not installed"):
        claude_version("/nonexistent/claude")


def test_the_fake_refuses_unknown_flags_like_the_real_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(FAKE_CLAUDE), "-p", "--max-turnz", "3"], capture_output=True, text=True, input="x"
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown option '--max-turnz'"
    done = subprocess.run(
        [str(FAKE_CLAUDE), "-p", "--output-format", "stream-json"],
        capture_output=True, text=True, input="x",
    )  # fmt: skip
    assert "requires --verbose" in done.stderr
    done = subprocess.run([str(FAKE_CLAUDE), "-p"], capture_output=True, text=True, input="")
    assert "Input must be provided" in done.stderr
