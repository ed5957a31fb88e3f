"""The checks after the agent, on real files and real processes: deliverables (globs,
symlinks, escapes), verify commands (pass, fail, timeout, output), writes outside."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from control.errors import NotFoundError, UnavailableError, UsageError
from control.messages import VerifyResult
from control.verify import (
    TAIL_CHARS,
    check_deliverables,
    run_verify,
)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("# guide\n")
    (root / "empty-dir").mkdir()
    (tmp_path / "outside.txt").write_text("secret\n")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "x.md").write_text("x\n")
    return root


# --- deliverables ----------------------------------------------------------------------------


def test_deliverables_that_are_there(checkout: Path) -> None:
    assert check_deliverables(checkout, []) == []
    assert check_deliverables(checkout, ["src/main.py", "docs", "./docs/guide.md"]) == []
    assert check_deliverables(checkout, ["src/*.py", "**/*.md", "docs/[g]uide.md"]) == []


def test_deliverables_that_are_missing_say_why(checkout: Path) -> None:
    assert check_deliverables(checkout, ["src/main.py", "README.md", "src/*.rs"]) == [
        "README.md (does not exist)",
        "src/*.rs (matches nothing)",
    ]


def test_a_glob_must_match_a_file(checkout: Path) -> None:
    assert check_deliverables(checkout, ["empty-*"]) == ["empty-* (matches no file)"]


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("/etc/passwd", "absolute paths are refused"),
        ("../outside.txt", "'..' is refused"),
        ("src/../../outside.txt", "'..' is refused"),
        ("../outside-dir/*.md", "'..' is refused"),
        ("", "not a path"),
        ("  ", "not a path"),
        ("a\0b", "not a path"),
    ],
)
def test_deliverables_outside_the_checkout_are_refused(
    checkout: Path, pattern: str, why: str
) -> None:
    [problem] = check_deliverables(checkout, [pattern])
    assert problem.startswith(f"{pattern} (") and why in problem


def test_symlinks_out_of_the_checkout_do_not_count(checkout: Path, tmp_path: Path) -> None:
    (checkout / "leak.txt").symlink_to(tmp_path / "outside.txt")
    (checkout / "linked-dir").symlink_to(tmp_path / "outside-dir")
    (checkout / "dangling").symlink_to(checkout / "nowhere")
    (checkout / "inner-link.py").symlink_to(checkout / "src" / "main.py")
    assert check_deliverables(
        checkout, ["leak.txt", "linked-dir/x.md", "linked-dir/*.md", "dangling", "inner-link.py"]
    ) == [
        "leak.txt (resolves outside the checkout (through a symlink))",
        "linked-dir/x.md (resolves outside the checkout (through a symlink))",
        "linked-dir/*.md (matches only paths outside the checkout (through symlinks))",
        "dangling (a broken symlink)",
    ]


def test_a_checkout_that_is_a_symlink_is_resolved_first(checkout: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(checkout)
    assert check_deliverables(alias, ["src/main.py", "src/*.py"]) == []


def test_deliverables_need_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a directory"):
        check_deliverables(tmp_path / "missing", ["a"])


# --- verify commands -------------------------------------------------------------------------


def test_passing_and_failing_commands_all_run_by_default(checkout: Path, tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    results = run_verify(
        checkout,
        ["echo out; echo err >&2", "exit 3", "test -f src/main.py && pwd"],
        30,
        log,
    )
    assert [(r.command, r.exit_code, r.timed_out, r.ok) for r in results] == [
        ("echo out; echo err >&2", 0, False, True),
        ("exit 3", 3, False, False),
        ("test -f src/main.py && pwd", 0, False, True),
    ]
    assert results[0].output_tail == "out\nerr\n"
    assert results[2].output_tail.strip() == str(checkout)  # cwd is the checkout
    assert all(r.duration_s >= 0 for r in results)
    text = log.read_text()
    assert "# verify: exit 3" in text and "exit code 3" in text and "out\nerr\n" in text
    assert results[1].to_dict() == {
        "command": "exit 3",
        "exit_code": 3,
        "output_tail": "",
        "duration_s": results[1].duration_s,
        "timed_out": False,
    }


def test_stop_on_failure_stops_at_the_first(checkout: Path) -> None:
    results = run_verify(checkout, ["true", "false", "true"], 30, stop_on_failure=True)
    assert [r.exit_code for r in results] == [0, 1]


def test_stdin_is_empty(checkout: Path) -> None:
    [result] = run_verify(checkout, ["cat; echo done"], 30)
    assert result.output_tail == "done\n"


def test_the_output_tail_keeps_the_end(checkout: Path) -> None:
    [result] = run_verify(checkout, ["for i in $(seq 1 3000); do echo line-$i; done"], 30)
    assert len(result.output_tail) == TAIL_CHARS
    assert result.output_tail.endswith("line-3000\n")
    assert "line-1\n" not in result.output_tail


def test_a_command_past_its_timeout_is_killed_with_its_group(
    checkout: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    log = tmp_path / "verify.log"
    [result] = run_verify(
        checkout, [f"echo started; sleep 30 & echo $! > {pid_file}; wait"], 1, log
    )
    assert result.timed_out and not result.ok
    assert result.exit_code < 0  # ended by a signal
    assert result.output_tail == "started\n"
    assert "wall-clock timeout after 1s" in log.read_text()
    _gone(int(pid_file.read_text()))


def test_a_command_that_ignores_sigterm_is_killed(checkout: Path) -> None:
    [result] = run_verify(checkout, ["trap '' TERM; sleep 30 & wait; sleep 30"], 0.5)
    assert result.timed_out
    assert result.exit_code == -9


def test_background_processes_do_not_outlive_their_command(checkout: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    [result] = run_verify(checkout, [f"sleep 30 & echo $! > {pid_file}; echo up"], 30)
    assert result.ok and not result.timed_out and result.output_tail == "up\n"
    _gone(int(pid_file.read_text()))


def test_the_environment_can_be_given(checkout: Path) -> None:
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "yes"}
    [result] = run_verify(checkout, ["echo $ONLY_THIS ${HOME:-no-home}"], 30, env=env)
    assert result.output_tail == "yes no-home\n"


def test_secret_values_are_masked_in_the_tail_and_the_log(checkout: Path, tmp_path: Path) -> None:
    log = tmp_path / "verify.log"
    env = {"PATH": os.environ["PATH"], "KEY": "sk-ant-verysecretvalue"}
    [result] = run_verify(
        checkout, ["echo key=$KEY >&2"], 30, log, env=env, secrets=["sk-ant-verysecretvalue"]
    )
    assert result.output_tail == "key=[REDACTED]\n"
    assert "verysecret" not in log.read_text() and "key=[REDACTED]" in log.read_text()


def test_invalid_output_bytes_are_replaced(checkout: Path) -> None:
    [result] = run_verify(checkout, ["printf 'a\\377b\\n'"], 30)
    assert result.output_tail == "a\ufffdb\n"


@pytest.mark.parametrize(
    ("commands", "timeout", "error", "why"),
    [
        (["true"], 0, UsageError, "timeout must be positive"),
        (["true", " "], 5, UsageError, "cannot be empty"),
        ([""], 5, UsageError, "cannot be empty"),
    ],
)
def test_bad_verify_arguments_are_refused(
    checkout: Path,
    tmp_path: Path,
    commands: list[str],
    timeout: float,
    error: type[Exception],
    why: str,
) -> None:
    log = tmp_path / "verify.log"
    with pytest.raises(error, match=why):
        run_verify(checkout, commands, timeout, log)
    assert not log.exists()  # nothing ran


def test_verify_needs_a_checkout_and_bash(checkout: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not a directory"):
        run_verify(tmp_path / "missing", ["true"], 5)
    with pytest.raises(UnavailableError, match="bash is not on PATH"):
        run_verify(checkout, ["true"], 5, env={"PATH": str(tmp_path / "empty")})


def _gone(pid: int) -> None:
    """The process dies (SIGKILL is delivered asynchronously, so give it a moment); a
    zombie not yet reaped by its new parent counts as dead."""
    state = "?"
    for _ in range(200):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running ({state})")


def test_verify_result_is_plain_data() -> None:
    result = VerifyResult("true", 0, "", timed_out=False, duration_s=0.1)
    assert result.ok
    assert not VerifyResult("true", 0, "", timed_out=True, duration_s=0.1).ok
