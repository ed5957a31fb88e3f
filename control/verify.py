"""The checks of a delivered checkout, on a worker after a phase's agent and at a run's
final integration check: the deliverables exist inside the checkout, and the spec's
verify commands pass (each under the one process supervisor, `control.process`).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from control.errors import NotFoundError, UnavailableError, UsageError
from control.messages import VerifyResult
from control.process import Wrap, run_watched

TAIL_CHARS = 2000
KILL_GRACE_S = 2.0
_GLOB_CHARS = frozenset("*?[")


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


_MARKERS = (b"<<<<<<< ", b">>>>>>> ", b"=======\n")


def conflict_markers_left(checkout: Path, conflicts: list[dict[str, Any]]) -> list[str]:
    """The files of conflicted merges that still hold git's conflict markers at the start
    of a line: a resolution that left them is no resolution."""
    left = []
    for conflict in conflicts:
        for name in conflict.get("conflicts") or []:
            path = checkout / name
            try:
                data = b"\n" + path.read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                continue  # resolved by removing it
            except OSError:
                left.append(name)
                continue
            if any(b"\n" + marker in data for marker in _MARKERS):
                left.append(name)
    return left


# --- verify commands -------------------------------------------------------------------------


def run_verify(
    checkout: Path,
    commands: Sequence[str],
    timeout_s: float,
    log_path: Path | None = None,
    *,
    stop_on_failure: bool = False,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    wrap: Wrap | None = None,
) -> list[VerifyResult]:
    """Run each command with `bash -c` in the checkout; one result per command run (its
    output tail the last TAIL_CHARS characters).

    Each command gets `timeout_s`, stdin from /dev/null and its own process group, which
    is killed when the command times out and when it exits (nothing it started in the
    background outlives it). Its output is appended to `log_path` as it comes. All
    commands run unless `stop_on_failure`. `env` replaces the worker's environment when
    given. `secrets` are masked in the log and in the output tails. `wrap` runs each
    command in a sandbox (see control.worker.sandbox).
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
    secrets = list(secrets)
    results = []
    for command in commands:
        outcome = run_watched(
            [bash, "-c", command],
            cwd=checkout,
            env=environment,
            log_path=log_path,
            wall_timeout_s=timeout_s,
            secrets=secrets,
            kill_grace_s=KILL_GRACE_S,
            log_header=[f"verify: {command}"],
            merge_stderr=True,
            wrap=wrap,
        )
        exit_code = outcome.exit_code
        result = VerifyResult(
            command=command,
            exit_code=127 if exit_code is None else exit_code,
            output_tail=(outcome.start_error or outcome.stdout_tail)[-TAIL_CHARS:],
            duration_s=outcome.duration_s,
            timed_out=outcome.timed_out,
        )
        results.append(result)
        if stop_on_failure and not result.ok:
            break
    return results
