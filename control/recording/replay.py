"""A recording checked as the workers and the final check will run it, before anything is
written: each phase's files against upstream's, its verify, then the merged tree and the
whole upstream suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from control.recording.gitcmd import git, text
from control.recording.model import Recording, RecordingError
from control.treetar import import_tarball

_VERIFY_TIMEOUT_S = 600.0


def verify_env() -> dict[str, str]:
    """How the checks run here: this interpreter first on PATH, no pytest plugins of ours
    (the upstream suite asks for none), no bytecode left in the tree."""
    bin_dir = Path(sys.executable).parent
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONDONTWRITEBYTECODE="1",
    )


def run_check(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=verify_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_VERIFY_TIMEOUT_S,
        check=False,
    )


def passed_count(output: str) -> int:
    """The `N passed` of pytest's last line (0 when it ran none)."""
    found = re.findall(r"(\d+) passed", output)
    return int(found[-1]) if found else 0


def check(recording: Recording, clone: Path, work: Path) -> None:
    """Replay `recording` in `work` as the workers and the final check will; RecordingError
    names the first phase whose files, checks or merge differ from upstream's."""
    repo = work / "replay"
    git(work, "init", "--quiet", "-b", "main", str(repo))
    seed = work / "seed.tar.xz"
    seed.write_bytes(recording.seed)
    if import_tarball(repo, seed, "main", "seed") != recording.base_tree:
        raise RecordingError("the seed tarball does not hold upstream's tree at the base")
    git(repo, "checkout", "--quiet", "main")
    for change in recording.changes:
        where = f"{change.phase} ({change.commit[:12]})"
        git(repo, "checkout", "--quiet", "-B", f"superagent/{change.phase}", "main")
        for dep in change.depends_on:
            git(repo, "merge", "--no-ff", "--no-edit", "--quiet", f"superagent/{dep}")
        patch = work / "phase.patch"
        patch.write_bytes(change.patch)
        git(repo, "apply", "--", str(patch))
        git(repo, "add", "--all", "--", ".")
        git(repo, "commit", "--quiet", "--allow-empty", "-m", change.phase)
        ours = git(repo, "ls-tree", "-r", "HEAD", "--", *change.touched)
        theirs = git(clone, "ls-tree", "-r", change.commit, "--", *change.touched)
        if ours != theirs:
            raise RecordingError(f"{where}: the replayed files differ from upstream's")
        for command in change.verify:
            done = run_check(command, repo)
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
                raise RecordingError(
                    f"{where}: `{command}` fails on the phase's tree "
                    f"(exit {done.returncode}: {' '.join(tail)})"
                )
        git(repo, "clean", "-fdxq")
    git(repo, "checkout", "--quiet", "-B", "integration", "main")
    for change in recording.changes:
        git(repo, "merge", "--no-ff", "--no-edit", "--quiet", f"superagent/{change.phase}")
    if text(repo, "rev-parse", "HEAD^{tree}") != recording.last_tree:
        raise RecordingError(f"the merged phases do not make upstream's tree at {recording.last}")
    done = run_check(recording.test_command, repo)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
        raise RecordingError(f"upstream's suite fails on the merged tree: {' '.join(tail)}")
    recording.tests_passed = passed_count(done.stdout)
