"""Checkpoints: an agent's work in progress snapshotted to a ref of its own on the remote
(refs/superagent/wip/), and put back into a later attempt's checkout."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from control.git.checks import checked_wip_ref
from control.git.prepared import Prepared
from control.git.remote import Remote


class Checkpoints(Remote):
    """Snapshots built in an index of the worker's own: the agent's index is never touched."""

    def checkpoint(self, prepared: Prepared, ref: str, message: str) -> str | None:
        """Snapshot the checkout (every change, untracked files too, ignored ones not) as
        a commit on top of HEAD and push it to the checkpoint `ref`; the commit, or None
        when nothing changed since the prepared commit. Built in an index of its own:
        the agent's index and files are left exactly as they are.
        """
        ref = checked_wip_ref(ref)
        path = self._checkout(prepared)
        head = self._rev_parse(path, "HEAD")
        with self._snapshot_index(path, head) as index:
            tree = self._git("write-tree", cwd=path, index=index).stdout.strip()
        if head == prepared.head and tree == self._rev_parse(path, f"{head}^{{tree}}"):
            return None
        commit = self._git(
            "commit-tree", "-p", head, "-F", "-", "--end-of-options", tree,
            cwd=path, stdin=message,
        ).stdout.strip()  # fmt: skip
        self._force_push(commit, ref, cwd=path)
        return commit

    def checkpoint_files(self, prepared: Prepared) -> list[str]:
        """The paths a checkpoint would hold changed since the prepared commit (what a
        secret scan must see first), without touching the agent's index."""
        path = self._checkout(prepared)
        with self._snapshot_index(path, "HEAD") as index:
            done = self._git(
                "diff", "--cached", "--name-only", "-z", "--no-renames", "--diff-filter=d",
                "--end-of-options", prepared.head, "--",
                cwd=path, index=index,
            )  # fmt: skip
        return sorted({name for name in done.stdout.split("\0") if name})

    @contextlib.contextmanager
    def _snapshot_index(self, path: Path, head: str) -> Iterator[Path]:
        """An index of the worker's own holding the checkout as it is now (ignored files
        left out), so a snapshot never touches the agent's index."""
        with tempfile.TemporaryDirectory(prefix="checkpoint-", dir=self.root) as scratch:
            index = Path(scratch) / "index"
            self._git("read-tree", "--end-of-options", head, cwd=path, index=index)
            self._git("add", "--all", "--", ".", cwd=path, index=index)
            yield index

    def restore(self, prepared: Prepared, ref: str) -> str | None:
        """Put the checkpoint at `ref` into the checkout (HEAD moves to it); its commit,
        or None when the remote has no such ref or it was not made on top of this
        checkout's prepared commit (the base or a prerequisite moved since)."""
        ref = checked_wip_ref(ref)
        path = self._checkout(prepared)
        if self.remote_ref(ref) is None:
            return None
        local = f"refs/superagent/resume/{prepared.slot}"
        with self._locked():
            commit = self._fetch_ref(ref, local)
        if not self._is_ancestor(path, prepared.head, commit):
            return None
        self._git("reset", "--hard", "--quiet", commit, "--", cwd=path)
        return commit
