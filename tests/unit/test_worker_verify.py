"""The checks after the agent, on real files and real processes: deliverables (globs,
symlinks, escapes), verify commands (pass, fail, timeout, output), writes outside."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from control.errors import NotFoundError, UnavailableError, UsageError
from control.worker.verify import (
    TAIL_CHARS,
    Snapshot,
    VerifyResult,
    check_deliverables,
    run_verify,
    snapshot,
    writes_outside,
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


def test_passing_and_failing_commands_all_run_by_default(checkout: Path) -> None:
    log = io.StringIO()
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
    text = log.getvalue()
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
    log = io.StringIO()
    [result] = run_verify(
        checkout, [f"echo started; sleep 30 & echo $! > {pid_file}; wait"], 1, log
    )
    assert result.timed_out and not result.ok
    assert result.exit_code < 0  # ended by a signal
    assert result.output_tail == "started\n"
    assert "timed out after 1s, killed" in log.getvalue()
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
    checkout: Path, commands: list[str], timeout: float, error: type[Exception], why: str
) -> None:
    log = io.StringIO()
    with pytest.raises(error, match=why):
        run_verify(checkout, commands, timeout, log)
    assert log.getvalue() == ""  # nothing ran


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


# --- writes outside the checkout -------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A work directory laid out as the worker's: a git workspace with slots, and more."""
    root = tmp_path / "work"
    workspace = root / "repos" / "widget-0123"
    (workspace / "repo" / "objects").mkdir(parents=True)
    (workspace / "repo" / "HEAD").write_text("ref: refs/heads/main\n")
    (workspace / "workspace.lock").write_text("")
    for slot in ("slot0", "slot1"):
        (workspace / "slots" / slot).mkdir(parents=True)
        (workspace / "slots" / slot / ".git").write_text("gitdir: ../../repo/worktrees/x\n")
        (workspace / "slots" / slot / "file.txt").write_text("x\n")
    (root / "cache").mkdir()
    (root / "cache" / "old.bin").write_text("x\n")
    (root / "notes.txt").write_text("x\n")
    (root / "logs").mkdir()
    return root


def _slot(work: Path, name: str = "slot0") -> Path:
    return work / "repos" / "widget-0123" / "slots" / name


def test_nothing_written_outside_is_nothing_reported(work: Path) -> None:
    checkout = _slot(work)
    before = snapshot(work, checkout)
    (checkout / "new.txt").write_text("inside\n")
    (checkout / "deep" / "er").mkdir(parents=True)
    (checkout / "deep" / "er" / "x").write_text("inside\n")
    assert writes_outside(before, snapshot(work, checkout)) == []


def test_writes_beside_and_above_the_checkout_are_named(work: Path) -> None:
    checkout = _slot(work)
    before = snapshot(work, checkout)
    workspace = checkout.parent.parent
    (checkout.parent / "stray.txt").write_text("../\n")  # beside the checkout
    (workspace / "stray.txt").write_text("../../\n")  # in the workspace
    (work / "notes.txt").write_text("changed\n")  # in the work root
    (work / "cache" / "old.bin").unlink()  # two levels down
    (work / "cache" / "sub").mkdir()
    (work / "top").mkdir()
    after = snapshot(work, checkout)
    assert writes_outside(before, after) == sorted(
        str(p)
        for p in [
            checkout.parent / "stray.txt",
            workspace / "stray.txt",
            work / "notes.txt",
            work / "cache" / "old.bin",
            work / "cache" / "sub",
            work / "top",
        ]
    )


def test_a_write_deeper_than_the_snapshot_shows_as_its_directory(work: Path) -> None:
    checkout = _slot(work)
    (work / "cache" / "sub").mkdir()
    before = snapshot(work, checkout)
    (work / "cache" / "sub" / "deep.txt").write_text("x\n")
    assert writes_outside(before, snapshot(work, checkout)) == [str(work / "cache" / "sub")]


def test_other_slots_and_git_are_not_the_agents_writes(work: Path) -> None:
    checkout = _slot(work)
    logs = work / "logs"
    before = snapshot(work, checkout, ignore=[logs])
    workspace = checkout.parent.parent
    (_slot(work, "slot1") / "other-agent.txt").write_text("x\n")  # another slot's agent
    (workspace / "slots" / "slot2").mkdir()  # another slot being prepared
    (workspace / "repo" / "packed-refs").write_text("")  # git in the shared clone
    (work / "repos" / "other-4567").mkdir()  # another remote's workspace
    (work / "repos" / "other-4567" / "workspace.lock").write_text("")
    (logs / "run.log").write_text("log\n")
    assert writes_outside(before, snapshot(work, checkout, ignore=[logs])) == []


def test_a_checkout_outside_the_work_root_has_its_parent_watched(
    tmp_path: Path, work: Path
) -> None:
    checkout = tmp_path / "elsewhere" / "co"
    checkout.mkdir(parents=True)
    before = snapshot(work, checkout)
    (checkout.parent / "stray.txt").write_text("x\n")
    (work / "new.txt").write_text("x\n")
    assert writes_outside(before, snapshot(work, checkout)) == [
        str(checkout.parent / "stray.txt"),
        str(work / "new.txt"),
    ]


def test_snapshots_of_different_checkouts_cannot_be_compared(work: Path) -> None:
    with pytest.raises(UsageError, match="different checkouts"):
        writes_outside(snapshot(work, _slot(work)), snapshot(work, _slot(work, "slot1")))


def test_a_snapshot_of_a_missing_work_root_is_empty(tmp_path: Path) -> None:
    empty = snapshot(tmp_path / "none", tmp_path / "none" / "slots" / "s")
    assert empty == Snapshot(checkout=tmp_path / "none" / "slots" / "s", entries={})
    assert writes_outside(empty, empty) == []


def test_verify_result_is_plain_data() -> None:
    result = VerifyResult("true", 0, "", 0.1, False)
    assert result.ok
    assert not VerifyResult("true", 0, "", 0.1, True).ok
