"""What a workspace does on the remote: push a result (to an attempt's ref, or to a
branch with a lease), promote an accepted one, read refs, check what a push contains."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from control.errors import UsageError
from control.git.checks import checked_attempt_ref, validate_branch, validate_commit
from control.git.clone import Clone
from control.git.errors import GitError, PushRejected
from control.git.prepared import Prepared


class Remote(Clone):
    """The remote's refs, read with `ls-remote`, written with `push`."""

    def delete_remote_refs(
        self, prefix: str, select: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Delete every ref under `prefix` (checkpoints or attempts of one run) on the
        remote, or those of them `select` chooses; the refs deleted."""
        if not prefix.startswith("refs/superagent/") or not prefix.endswith("/"):
            raise UsageError(f"not a superagent ref prefix: {prefix!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        done = self._git("ls-remote", "--", self.remote_url, f"{prefix}*", cwd=self.root)
        refs = [
            name
            for line in done.stdout.splitlines()
            if (name := line.partition("\t")[2]).startswith(prefix)
            and (select is None or select(name))
        ]
        if refs:
            with self._locked():
                self._ensure_repo()
                self._git(
                    "push", "--porcelain", "--no-verify", "--quiet",
                    "--", self.remote_url, *(f":{r}" for r in refs),
                    cwd=self.repo_path,
                )  # fmt: skip
        return refs

    def push(self, prepared: Prepared, ref: str | None = None) -> str:
        """Push the checkout's HEAD; the pushed commit, as `git ls-remote` reports it.

        With `ref` (an attempt's own ref under refs/superagent/attempts/), HEAD replaces
        whatever that ref holds: no other attempt ever writes it, and the orchestrator,
        not the worker, moves the phase's branch. Without it, HEAD goes to the phase's
        branch, only if the branch is still where `prepare` saw it (the merge).
        """
        path = self._checkout(prepared)
        head = self._rev_parse(path, "HEAD")
        if ref is not None:
            self._force_push(head, checked_attempt_ref(ref), cwd=path)
            found = self.remote_ref(ref)
            if found != head:
                raise GitError(
                    f"pushed {head[:12]} to {ref} but the remote reports {found or 'no ref'}",
                    command="git push",
                )
            return head
        ref = f"refs/heads/{validate_branch(prepared.branch)}"
        expected = prepared.old_remote_commit
        done = self._git(
            "push", "--porcelain", "--no-verify", "--quiet",
            f"--force-with-lease={ref}:{expected or ''}",
            "--", self.remote_url, f"{head}:{ref}",
            cwd=path, ok_codes=None,
        )  # fmt: skip
        if done.returncode != 0:
            output = done.stdout + done.stderr
            if "stale info" in output or "fetch first" in output or "[rejected]" in output:
                found = self.remote_commit(prepared.branch)
                raise PushRejected(
                    f"push of {prepared.branch!r} refused: the remote branch moved (expected "
                    f"{expected or 'no branch'}, found {found or 'no branch'}); "
                    "someone else pushed to it",
                    branch=prepared.branch,
                    expected=expected,
                    found=found,
                )
            raise self._error(("push",), done.returncode, done.stderr or done.stdout)
        found = self.remote_commit(prepared.branch)
        if found != head:
            raise GitError(
                f"pushed {head[:12]} to {prepared.branch!r} but the remote reports "
                f"{found or 'no branch'}",
                command="git push",
            )
        return head

    def remote_commit(self, branch: str) -> str | None:
        """The commit `branch` points to on the remote now, or None if it does not exist."""
        return self.remote_heads([branch]).get(branch)

    def remote_heads(self, branches: Sequence[str]) -> dict[str, str]:
        """The commit each of `branches` points to on the remote now, read with one
        `ls-remote`; a branch the remote does not have is left out."""
        refs = {f"refs/heads/{validate_branch(b)}": b for b in branches}
        if not refs:
            return {}
        self.root.mkdir(parents=True, exist_ok=True)
        done = self._git("ls-remote", "--", self.remote_url, *refs, cwd=self.root)
        found = {}
        for line in done.stdout.splitlines():
            commit, _, name = line.partition("\t")
            if name in refs:
                found[refs[name]] = commit
        return found

    def promote(self, source_ref: str, commit: str, branch: str) -> None:
        """Point the remote `branch` at `commit`, taken from `source_ref` (an attempt's
        ref): how an accepted result becomes the phase's branch, and how a branch that
        was moved anyway is repaired. Nothing is checked out; no repository code runs.
        """
        commit = validate_commit(commit, "commit")
        ref = f"refs/heads/{validate_branch(branch)}"
        if self.remote_ref(ref) == commit:
            return
        with self._locked():
            self._ensure_repo()
            self._fetch_ref(checked_attempt_ref(source_ref), "refs/superagent/promote")
            self._force_push(commit, ref, cwd=self.repo_path)
        found = self.remote_ref(ref)
        if found != commit:
            raise GitError(
                f"set {branch!r} to {commit[:12]} but the remote reports {found or 'no branch'}",
                command="git push",
            )

    def remote_ref(self, ref: str) -> str | None:
        """The commit the full `ref` points to on the remote now, or None."""
        self.root.mkdir(parents=True, exist_ok=True)
        done = self._git("ls-remote", "--", self.remote_url, ref, cwd=self.root)
        for line in done.stdout.splitlines():
            commit, _, name = line.partition("\t")
            if name == ref:
                return commit
        return None

    def missing_from(self, ref: str, commits: Sequence[str]) -> tuple[str | None, list[str]]:
        """Fetch the attempt `ref` from the remote; its commit there (None: no such ref) and
        those of `commits` it does not contain. Only objects are compared: no checkout, no
        hook, nothing from the repository runs (the orchestrator checks a worker's push).
        """
        ref = checked_attempt_ref(ref)
        wanted = [validate_commit(c, f"commit expected in {ref}") for c in commits]
        if self.remote_ref(ref) is None:
            return None, wanted
        with self._locked():
            self._ensure_repo()
            tip = self._fetch_ref(ref, "refs/superagent/check")
            missing = [c for c in wanted if not self._contains(tip, c)]
        return tip, missing

    def _force_push(self, commit: str, ref: str, *, cwd: Path) -> None:
        """`commit` to the remote's `ref`, whatever it held: only refs no one else writes
        (an attempt's, a checkpoint's) or a branch the orchestrator repairs."""
        self._git(
            "push", "--porcelain", "--no-verify", "--quiet", "--force",
            "--", self.remote_url, f"{commit}:{ref}",
            cwd=cwd,
        )  # fmt: skip
