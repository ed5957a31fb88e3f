"""The workspace of one remote on one machine: a phase's checkout prepared, committed,
and (through its parts) checkpointed, pushed and released."""

from __future__ import annotations

from collections.abc import Sequence

from control.errors import ConflictError, NotFoundError, UsageError
from control.git.checkpoints import Checkpoints
from control.git.checks import validate_branch, validate_commit, validate_slot
from control.git.errors import GitError
from control.git.merging import Merging
from control.git.prepared import Prepared
from control.messages import PrerequisiteRef


class Workspace(Checkpoints, Merging):
    """The local clone of one remote, and a worktree per slot under `<root>/slots/`.

    Safe to share between the threads (and processes) of one worker: operations on the
    shared clone hold an exclusive lock on `<root>/workspace.lock`.
    """

    def prepare(
        self,
        slot: str,
        branch: str,
        base: str,
        prerequisites: Sequence[PrerequisiteRef] = (),
        *,
        keep_conflicts: bool = False,
    ) -> Prepared:
        """A clean checkout of `base` in `slot`, with each prerequisite merged at its commit.
        A prerequisite that a later one contains comes in with it (merging it first could
        conflict where the later one has resolved it already).

        Raises NotFoundError for a branch missing on the remote, ConflictError when a
        named commit is not on its branch, MergeConflict when a merge does not go clean;
        with `keep_conflicts`, a conflicted merge is committed with its conflict markers
        instead, for the agent to resolve (`Prepared.conflicts` says where).
        """
        validate_slot(slot)
        validate_branch(branch)
        validate_branch(base)
        wanted = []
        for prerequisite in prerequisites:
            validate_branch(prerequisite.branch)
            commit = validate_commit(prerequisite.commit, f"prerequisite {prerequisite.phase!r}")
            wanted.append(PrerequisiteRef(prerequisite.phase, prerequisite.branch, commit))
        path = self.slot_path(slot)
        with self._locked():
            self._ensure_repo()
            self._fetch()
            base_commit = self._fetched(base)
            if base_commit is None:
                raise NotFoundError(f"base branch {base!r} is not on the remote {self._display}")
            old_remote = self._fetched(branch)
            for prerequisite in wanted:
                self._check_prerequisite(prerequisite)
            self._clean_slot(path)
            self.slots_path.mkdir(parents=True, exist_ok=True)
            self._git(
                "worktree", "add", "--detach", "--force", "--force", "--quiet",
                "--", str(path), base_commit,
                cwd=self.repo_path,
            )  # fmt: skip
            if not (self.repo_path / "worktrees" / slot / "gitdir").is_file():
                raise GitError(
                    f"git made the worktree of slot {slot!r} under another name than "
                    f"worktrees/{slot} (a leftover of another slot?)",
                    command="git worktree add",
                )
            self._maintain()
        merged = []
        for i, prerequisite in enumerate(wanted):
            later = next(
                (
                    other
                    for other in wanted[i + 1 :]
                    if self._is_ancestor(self.repo_path, prerequisite.commit, other.commit)
                ),
                None,
            )
            if later is not None:
                merged.append(
                    {
                        "phase": prerequisite.phase,
                        "branch": prerequisite.branch,
                        "commit": prerequisite.commit,
                        "head": "",
                        "with": later.phase,
                    }
                )
                continue
            merged.append(self._merge(path, prerequisite, keep_conflicts=keep_conflicts))
        return Prepared(
            slot=slot,
            path=path,
            branch=branch,
            base=base,
            base_commit=base_commit,
            head=self._rev_parse(path, "HEAD"),
            merged=merged,
            old_remote_commit=old_remote,
        )

    def commit_all(self, prepared: Prepared, message: str, *, after: str | None = None) -> str:
        """Commit everything in the checkout as the worker; the new HEAD (or the old one
        when the agent changed nothing). The agent's own commits are kept, but HEAD must
        still contain the prepared commit: a rewritten history would drop prerequisites.
        With `after` (a restored checkpoint), a HEAD still at it gets a commit of the
        worker's anyway: an attempt's result is its own commit, never a checkpoint.
        """
        if not isinstance(message, str) or not message.strip():
            raise UsageError("a commit message cannot be empty")
        path = self._checkout(prepared)
        head = self._rev_parse(path, "HEAD")
        if not self._is_ancestor(path, prepared.head, head):
            raise ConflictError(
                f"the checkout of {prepared.branch!r} no longer contains the prepared commit "
                f"{prepared.head[:12]} (HEAD is {head[:12]}): its history was rewritten"
            )
        self._git("add", "--all", "--", ".", cwd=path)
        staged = self._git("diff", "--cached", "--quiet", cwd=path, ok_codes=(0, 1))
        if staged.returncode == 0 and head != after:
            return head
        self._git(
            "commit", "--no-verify", "--quiet", "--allow-empty", "--file=-",
            cwd=path, stdin=message,
        )  # fmt: skip
        return self._rev_parse(path, "HEAD")

    def changed_files(self, prepared: Prepared) -> list[str]:
        """Every path added or changed since the prepared commit (committed by the agent
        or not), relative to the checkout: what `commit_all` would push."""
        path = self._checkout(prepared)
        self._git("add", "--all", "--", ".", cwd=path)
        done = self._git(
            "diff", "--cached", "--name-only", "-z", "--no-renames", "--diff-filter=d",
            "--end-of-options", prepared.head, "--",
            cwd=path,
        )  # fmt: skip
        return sorted({name for name in done.stdout.split("\0") if name})

    def ignored(self, prepared: Prepared, paths: Sequence[str]) -> list[str]:
        """Those of `paths` (relative to the checkout) that git ignores: they exist on disk
        but `commit_all` leaves them out of the pushed commit."""
        path = self._checkout(prepared)
        if not paths:
            return []
        done = self._git(
            "check-ignore", "--no-index", "-z", "--stdin",
            cwd=path, stdin="\0".join(paths) + "\0", ok_codes=(0, 1),
        )  # fmt: skip
        return [name for name in done.stdout.split("\0") if name]
