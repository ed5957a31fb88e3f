"""git as the recording reads a clone and builds its replay: the bytes of a patch or a
tree never depend on the clone's own settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

from control.errors import UsageError
from control.recording.model import RecordingError

GIT_ID = ("-c", "user.name=superagent recording", "-c", "user.email=recording@superagent.local")
# How a clone's own settings could change the bytes a patch or a tree is made of.
_PLAIN_DIFF = (
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "color.ui=never",
)


def git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["git", *GIT_ID, *_PLAIN_DIFF, "-C", str(repo), *args],
        input=data,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RecordingError(f"git {' '.join(args[:3])} in {repo}: {reason[-1] if reason else ''}")
    return done.stdout


def text(repo: Path, *args: str) -> str:
    """git's output as one stripped line (or lines) of text."""
    return git(repo, *args).decode("utf-8", "replace").strip()


def resolve(clone: Path, rev: str) -> str:
    try:
        return text(clone, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RecordingError:
        raise UsageError(f"{rev!r} is not a commit of {clone}") from None


def changed_paths(clone: Path, parent: str, commit: str) -> tuple[list[str], list[str]]:
    """Every path `commit` added, changed or deleted; and those of them it leaves existing."""
    out = git(clone, "diff", "--name-status", "--no-renames", "-z", parent, commit)
    fields = [f.decode("utf-8", "surrogateescape") for f in out.split(b"\0") if f]
    touched, present = [], []
    for status, path in zip(fields[::2], fields[1::2], strict=True):
        touched.append(path)
        if status != "D":
            present.append(path)
    return touched, present
