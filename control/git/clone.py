"""The shared clone of one remote: created aside and renamed into place, fetched, kept,
and locked so the slots of one worker (threads or processes) take turns in it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from control.errors import ConflictError, NotFoundError, UnavailableError
from control.git.checks import display_url
from control.git.runner import Git
from control.messages import PrerequisiteRef

# Where fetched remote branches live in the local clone: apart from refs/heads, which
# agents may write to, and refs/remotes, which a fetch of theirs may rewrite.
_FETCHED = "refs/superagent/remote"
_LOCK_POLL_S = 0.05
_REMOTE_MARKER = "superagent-remote"  # inside the clone: which remote it mirrors


def remove_tree(path: Path) -> None:
    """Remove a tree the agent wrote, read-only directories included; never follows links."""

    def retry(func: Callable[..., Any], name: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            if not os.path.islink(name) and os.path.isdir(name):
                os.chmod(name, stat.S_IRWXU)
        func(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


class Clone(Git):
    """The clone under `<root>/repo`, and the slot checkouts it lends its objects to."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "workspace.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise UnavailableError(
                            f"the git workspace {self.root} stayed locked for "
                            f"{self.timeout_s:g}s (another slot's git command hangs?)"
                        ) from None
                    time.sleep(_LOCK_POLL_S)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _ensure_repo(self) -> None:
        """Create the clone on first use; check it is this remote's on every other."""
        marker = self.repo_path / _REMOTE_MARKER
        if (self.repo_path / "HEAD").is_file() and marker.is_file():
            recorded = marker.read_text(encoding="utf-8").strip()
            if recorded != self.remote_url:
                raise ConflictError(
                    f"the git workspace {self.root} belongs to {display_url(recorded)!r}, "
                    f"not {self._display!r}"
                )
            return
        # Built aside and renamed into place, so a crash never leaves half a clone.
        scratch = Path(tempfile.mkdtemp(prefix=".repo-init-", dir=self.root))
        try:
            self._git("init", "--bare", "--quiet", "--", str(scratch), cwd=self.root)
            (scratch / _REMOTE_MARKER).write_text(self.remote_url + "\n", encoding="utf-8")
            if self.repo_path.exists():
                remove_tree(self.repo_path)
            scratch.rename(self.repo_path)
        finally:
            if scratch.exists():
                remove_tree(scratch)

    def _fetch(self) -> None:
        # A fetch killed mid-way (worker crash) leaves ref lock files that would fail
        # every fetch after it; under our lock nothing else writes these refs.
        fetched = self.repo_path / _FETCHED
        if fetched.is_dir():
            for stale in fetched.rglob("*.lock"):
                stale.unlink(missing_ok=True)
        self._git(
            "fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head",
            "--", self.remote_url, f"+refs/heads/*:{_FETCHED}/*",
            cwd=self.repo_path,
        )  # fmt: skip

    def _fetched(self, branch: str) -> str | None:
        done = self._git(
            "rev-parse", "--verify", "--quiet", "--end-of-options",
            f"{_FETCHED}/{branch}^{{commit}}",
            cwd=self.repo_path, ok_codes=(0, 1),
        )  # fmt: skip
        if done.returncode != 0:
            return None
        return done.stdout.strip() or None

    def _check_prerequisite(self, prerequisite: PrerequisiteRef) -> None:
        tip = self._fetched(prerequisite.branch)
        if tip is None:
            raise NotFoundError(
                f"prerequisite {prerequisite.phase!r}: branch {prerequisite.branch!r} is not "
                f"on the remote {self._display}"
            )
        if not self._contains(tip, prerequisite.commit):
            raise ConflictError(
                f"prerequisite {prerequisite.phase!r}: commit {prerequisite.commit[:12]} is not "
                f"on branch {prerequisite.branch!r} (its tip is {tip[:12]}); was it force-pushed?"
            )

    def _clean_slot(self, path: Path) -> None:
        """Forget whatever a previous run left in this slot, crashed or not."""
        if path.exists() or path.is_symlink():
            self._git(
                "worktree", "remove", "--force", "--force", "--", str(path),
                cwd=self.repo_path, ok_codes=None,
            )  # fmt: skip
            if path.exists() or path.is_symlink():
                remove_tree(path)
        self._git("worktree", "prune", cwd=self.repo_path)

    def _maintain(self) -> None:
        """`git gc --auto`, the one place it may run: under the lock, never detached."""
        self._git(
            "-c", "gc.auto=6700", "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet",
            cwd=self.repo_path,
        )  # fmt: skip

    def _contains(self, tip: str, commit: str) -> bool:
        """Whether the clone has `commit` and `tip` contains it (objects only: no checkout)."""
        exists = self._git(
            "cat-file", "-e", "--end-of-options", f"{commit}^{{commit}}",
            cwd=self.repo_path, ok_codes=None,
        )  # fmt: skip
        return exists.returncode == 0 and self._is_ancestor(self.repo_path, commit, tip)

    def _fetch_ref(self, ref: str, local: str) -> str:
        """The remote's `ref` fetched into the clone as `local` (under the lock); its commit."""
        self._git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
            "--", self.remote_url, f"+{ref}:{local}",
            cwd=self.repo_path,
        )  # fmt: skip
        return self._rev_parse(self.repo_path, local)

    def release(self, slot: str) -> None:
        """Remove `slot`'s checkout (whatever state it is in); nothing if there is none."""
        path = self.slot_path(slot)
        with self._locked():
            if (self.repo_path / "HEAD").is_file():
                self._clean_slot(path)
            elif path.exists() or path.is_symlink():
                remove_tree(path)
