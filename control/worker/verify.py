"""What the worker checks after the agent, before anything is committed: the
deliverables exist inside the checkout, the spec's verify commands pass, and the
agent wrote nothing beside its checkout in the worker's work directory.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, TextIO

from control.errors import NotFoundError, UnavailableError, UsageError
from control.worker.process import exited, signal_group

TAIL_CHARS = 2000
KILL_GRACE_S = 2.0
_POLL_S = 0.05
_DRAIN_AFTER_EXIT_S = 2.0
_GLOB_CHARS = frozenset("*?[")
_WORKSPACE_MARK = "workspace.lock"  # the root of a git workspace (see control.worker.git)


# --- deliverables ----------------------------------------------------------------------------


def check_deliverables(checkout: Path, patterns: Sequence[str]) -> list[str]:
    """The deliverables that are not there, each as `pattern (reason)`; empty when all are.

    A pattern is a path or a glob relative to the checkout; a glob must match at least
    one file. Absolute paths, '..' and anything that resolves (through symlinks) outside
    the checkout are refused.
    """
    if not checkout.is_dir():
        raise NotFoundError(f"the checkout {checkout} is not a directory")
    root = Path(os.path.realpath(checkout))
    problems = []
    for pattern in patterns:
        reason = _deliverable_problem(root, pattern)
        if reason is not None:
            problems.append(f"{pattern} ({reason})")
    return problems


def _inside(root: Path, path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == root or real.is_relative_to(root)


def _deliverable_problem(root: Path, pattern: str) -> str | None:
    if not isinstance(pattern, str) or not pattern.strip() or "\0" in pattern:
        return "not a path"
    pure = PurePosixPath(pattern)
    if pure.is_absolute():
        return "absolute paths are refused: deliverables are relative to the checkout"
    if ".." in pure.parts:
        return "'..' is refused: deliverables stay inside the checkout"
    if _GLOB_CHARS & set(pattern):
        return _glob_problem(root, pattern)
    return _path_problem(root, root / pure)


def _path_problem(root: Path, path: Path) -> str | None:
    if not os.path.lexists(path):
        return "does not exist"
    if not _inside(root, path):
        return "resolves outside the checkout (through a symlink)"
    if not path.exists():
        return "a broken symlink"
    return None


def _glob_problem(root: Path, pattern: str) -> str | None:
    matches = glob.glob(pattern, root_dir=root, recursive=True)
    if not matches:
        return "matches nothing"
    inside = [m for m in matches if _inside(root, root / m)]
    if not inside:
        return "matches only paths outside the checkout (through symlinks)"
    if not any((root / m).is_file() for m in inside):
        return "matches no file"
    return None


# --- verify commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """How one verify command ended."""

    command: str
    exit_code: int  # negative: ended by that signal (a timeout kills the command's group)
    output_tail: str  # the last TAIL_CHARS characters of stdout and stderr, interleaved
    duration_s: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_verify(
    checkout: Path,
    commands: Sequence[str],
    timeout_s: float,
    log: TextIO | None = None,
    *,
    stop_on_failure: bool = False,
    env: Mapping[str, str] | None = None,
) -> list[VerifyResult]:
    """Run each command with `bash -c` in the checkout; one result per command run.

    Each command gets `timeout_s`, stdin from /dev/null and its own process group, which
    is killed when the command times out and when it exits (nothing it started in the
    background outlives it). Its output goes to `log` as it comes. All commands run
    unless `stop_on_failure`. `env` replaces the worker's environment when given.
    """
    if not timeout_s > 0:
        raise UsageError(f"the verify timeout must be positive, not {timeout_s}")
    if not checkout.is_dir():
        raise NotFoundError(f"the checkout {checkout} is not a directory")
    for command in commands:
        if not isinstance(command, str) or not command.strip():
            raise UsageError("a verify command cannot be empty")
    environment = dict(os.environ if env is None else env)
    bash = shutil.which("bash", path=environment.get("PATH", os.defpath))
    if bash is None:
        raise UnavailableError("cannot run verify commands: bash is not on PATH")
    results = []
    for command in commands:
        result = _run_one(bash, command, checkout, timeout_s, log, environment)
        results.append(result)
        if stop_on_failure and not result.ok:
            break
    return results


class _Output(threading.Thread):
    """Reads the command's output to its end: into the log as it comes, and a tail."""

    def __init__(self, pipe: IO[bytes], log: TextIO | None) -> None:
        super().__init__(name="verify-output", daemon=True)
        self._pipe = pipe
        self._log = log
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()
        self._tail = ""

    def _add(self, text: str) -> None:
        with self._lock:
            self._tail = (self._tail + text)[-TAIL_CHARS:]
        if self._log is not None and text:
            self._log.write(text)
            self._log.flush()

    def run(self) -> None:
        fd = self._pipe.fileno()
        try:
            while data := os.read(fd, 65536):
                self._add(self._decoder.decode(data))
            self._add(self._decoder.decode(b"", final=True))
        except (OSError, ValueError):
            pass  # the pipe was closed under us: what was read is what there is
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    @property
    def tail(self) -> str:
        with self._lock:
            return self._tail


def _wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _run_one(
    bash: str,
    command: str,
    checkout: Path,
    timeout_s: float,
    log: TextIO | None,
    env: dict[str, str],
) -> VerifyResult:
    if log is not None:
        log.write(f"# verify: {command}\n")
        log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(
        [bash, "-c", command],
        cwd=checkout,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None
    output = _Output(proc.stdout, log)
    output.start()
    timed_out = not _wait_exit(proc.pid, timeout_s)
    if timed_out:
        signal_group(proc.pid, signal.SIGTERM)
        _wait_exit(proc.pid, KILL_GRACE_S)
    # The leader is gone or going; what it left in its group (a server started with '&')
    # goes too, while its unreaped zombie still pins the group id.
    signal_group(proc.pid, signal.SIGKILL)
    exit_code = proc.wait()
    duration = time.monotonic() - started
    output.join(_DRAIN_AFTER_EXIT_S)  # a process that left the group may hold the pipe
    if log is not None:
        ending = f"timed out after {timeout_s:g}s, killed" if timed_out else "exited"
        log.write(f"\n# verify {ending}: exit code {exit_code}, {duration:.1f}s\n")
        log.flush()
    return VerifyResult(
        command=command,
        exit_code=exit_code,
        output_tail=output.tail,
        duration_s=duration,
        timed_out=timed_out,
    )


# --- writes outside the checkout -------------------------------------------------------------

Entry = tuple[int, int, int]  # (mtime_ns, size, inode)
_LISTED: Entry = (0, 0, 0)  # a directory whose entries are in the snapshot themselves


@dataclass(frozen=True)
class Snapshot:
    """Names and mtimes of what sits around a checkout, to compare before and after."""

    checkout: Path
    entries: Mapping[str, Entry] = field(default_factory=dict)


def snapshot(work_root: Path, checkout: Path, *, ignore: Iterable[Path] = ()) -> Snapshot:
    """What is around `checkout`: the top two levels of `work_root` and the entries of
    each directory between the checkout and the work root (the checkout's parent at least).

    Left out, because other slots and git change them while an agent runs: the checkout,
    the directories beside it (other slots' checkouts), git directories, other git
    workspaces, and the `ignore` paths (logs, the inbox...).
    """
    checkout = Path(os.path.abspath(checkout))
    work_root = Path(os.path.abspath(work_root))
    skip = {checkout, *(Path(os.path.abspath(p)) for p in ignore)}
    ancestors = []
    parent = checkout.parent
    while True:
        ancestors.append(parent)
        if parent == work_root or not parent.is_relative_to(work_root) or parent == parent.parent:
            break
        parent = parent.parent
    entries: dict[str, Entry] = {}
    for directory in ancestors:
        _list(directory, entries, skip, ancestors, siblings=directory == checkout.parent)
    if work_root not in ancestors:
        _list(work_root, entries, skip, ancestors, siblings=False)
    for child in list(entries):
        path = Path(child)
        # One level further down the work root, in directories no slot manages.
        if (
            path.parent == work_root
            and path not in ancestors
            and path.is_dir()
            and not path.is_symlink()
            and not _managed(path)
        ):
            # Listed: its own mtime only repeats what its entries show.
            entries[child] = _LISTED
            _list(path, entries, skip, ancestors, siblings=False)
    return Snapshot(checkout=checkout, entries=entries)


def _managed(path: Path) -> bool:
    """A git directory or a git workspace: changed by git and other slots, not by agents."""
    git_dir = (path / "HEAD").is_file() and (path / "objects").is_dir()
    return git_dir or (path / _WORKSPACE_MARK).is_file()


def _list(
    directory: Path,
    entries: dict[str, Entry],
    skip: set[Path],
    ancestors: Sequence[Path],
    *,
    siblings: bool,
) -> None:
    try:
        children = list(os.scandir(directory))
    except OSError:
        return
    for child in children:
        path = Path(child.path)
        if path in skip or path in ancestors:
            continue
        try:
            is_dir = child.is_dir(follow_symlinks=False)
            if is_dir and (siblings or _managed(path)):
                continue  # beside the checkout, directories are other slots' checkouts
            info = child.stat(follow_symlinks=False)
        except OSError:
            continue  # gone while we looked
        entries[child.path] = (info.st_mtime_ns, info.st_size, info.st_ino)


def writes_outside(before: Snapshot, after: Snapshot) -> list[str]:
    """The paths created, changed or removed between two snapshots, sorted.

    A directory's own entry changes when something is created or removed inside it,
    so a write deeper than the snapshot looks shows as its directory.
    """
    if before.checkout != after.checkout:
        raise UsageError(
            f"snapshots of different checkouts ({before.checkout}, {after.checkout}) "
            "cannot be compared"
        )
    changed = {
        path
        for path in before.entries.keys() | after.entries.keys()
        if before.entries.get(path) != after.entries.get(path)
    }
    checkout = before.checkout
    return sorted(p for p in changed if not Path(p).is_relative_to(checkout))
