"""The git workspace of one machine: one local clone, one worktree per slot.

A phase gets a clean detached checkout of its base, the prerequisites merged at the
exact commits the orchestrator verified, and after the agent one commit by the
worker pushed with a lease on the branch's previous value. Git runs from argv lists
with a timeout, no prompts, and nothing the repository controls: no hooks, fsmonitor,
filters, sshCommand or includes. The system config is skipped, the global one is a
fixed file, the clone's own config is rewritten to a known text before every call,
and a checkout's git directory is named explicitly (never found through the
checkout's `.git`, which the agent can replace). Refs and URLs are validated and come
after `--`. Credentials are the machine's own (SSH key, credential helper).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import (
    ConflictError,
    ExitCode,
    NotFoundError,
    SuperagentError,
    UnavailableError,
    UsageError,
)
from control.messages import WIP_REF_PREFIX, PrerequisiteRef
from control.names import branch_name_problem, remote_url_problem

__all__ = [
    "GitError",
    "MergeConflict",
    "Prepared",
    "PrerequisiteRef",
    "PushRejected",
    "Workspace",
    "remove_tree",
    "validate_branch",
    "validate_remote_url",
    "workspace_root",
]

DEFAULT_TIMEOUT_S = 600.0
CONFLICT_DIFF_CHARS = 6000  # of each side's change to the conflicting files, for the agent
# Where fetched remote branches live in the local clone: apart from refs/heads, which
# agents may write to, and refs/remotes, which a fetch of theirs may rewrite.
_FETCHED = "refs/superagent/remote"
_LOCK_POLL_S = 0.05
_REMOTE_MARKER = "superagent-remote"  # inside the clone: which remote it mirrors
_STDERR_TAIL_CHARS = 400

_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_SLOT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# What git itself may speak to a remote: never `ext::` (runs a command) or other helpers.
_ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
# From the worker's environment, only what says how to reach remotes and where the
# machine's git configuration is; never a GIT_DIR, an index or an askpass program.
_ENV_KEEP = frozenset(
    {
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_CONFIG_GLOBAL",
        "GIT_EXEC_PATH",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_HTTP_USER_AGENT",
    }
)
_CONFIG = (
    "core.hooksPath=/dev/null",  # the repository's hooks are code from the repository
    "core.fsmonitor=false",  # a program git would start on every status
    "core.untrackedCache=false",
    "protocol.ext.allow=never",  # belt and braces beside GIT_ALLOW_PROTOCOL
    "protocol.fd.allow=never",
    "core.askPass=",  # no askpass program: a missing credential fails instead of waiting
    "gc.auto=0",  # gc runs once per prepare, under the lock (see _maintain)
    "maintenance.auto=false",
    "commit.gpgSign=false",  # a signing prompt would hang a headless worker
    "rerere.enabled=false",  # a conflict is reported, never resolved from a recording
    "advice.detachedHead=false",
)


# The whole config of the shared clone; anything else in it (written by an agent on a
# trusted host, say) is replaced before the next git call.
_REPO_CONFIG = b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"


class GitError(SuperagentError):
    """A git command failed: the message names it and ends with git's last words."""

    def __init__(self, message: str, *, command: str = "", stderr_tail: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.stderr_tail = stderr_tail


class PushRejected(GitError):
    """The remote branch is not where this worker expected: someone else pushed to it."""

    exit_code = ExitCode.CONFLICT

    def __init__(self, message: str, *, branch: str, expected: str | None, found: str | None):
        super().__init__(message, command="git push")
        self.branch = branch
        self.expected = expected
        self.found = found


class MergeConflict(ConflictError):
    """A prerequisite does not merge cleanly; the checkout is left as it was before it."""

    def __init__(self, prerequisite: PrerequisiteRef, files: Sequence[str]) -> None:
        self.phase = prerequisite.phase
        self.branch = prerequisite.branch
        self.commit = prerequisite.commit
        self.files = list(files)
        shown = ", ".join(self.files) or "(git named no files)"
        super().__init__(
            f"prerequisite {self.phase!r} ({self.branch} at {self.commit[:12]}) does not merge "
            f"cleanly: conflicts in {shown}"
        )

    def to_dict(self) -> dict[str, Any]:
        """What a response says about the conflict."""
        return {
            "phase": self.phase,
            "branch": self.branch,
            "commit": self.commit,
            "files": self.files,
        }


@dataclass(frozen=True)
class Prepared:
    """A slot's checkout, ready for the agent."""

    slot: str
    path: Path
    branch: str  # the phase's branch on the remote (the checkout itself is detached)
    base: str
    base_commit: str
    head: str  # the commit the agent starts from: the base plus the merged prerequisites
    merged: list[dict[str, Any]] = field(default_factory=list)  # phase, branch, commit, head

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        """The merges committed with conflict markers (`prepare(keep_conflicts=True)`)."""
        return [m for m in self.merged if m.get("conflicts")]

    old_remote_commit: str | None = None  # the branch on the remote at prepare: the lease


def validate_branch(name: str) -> str:
    """`name` if git would take it as a branch name and no command can read it as an option.

    The rules of `git check-ref-format --branch`, in Python; stricter only for '@'.
    """
    if not isinstance(name, str):
        raise UsageError(f"a branch name must be text, not {type(name).__name__}")
    problem = branch_name_problem(name)
    if problem is None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problem = "a branch name must be valid UTF-8"
    if problem is not None:
        raise UsageError(f"invalid branch name {name!r}: {problem}")
    return name


def validate_remote_url(url: str) -> str:
    """`url` if it names a git remote over ssh, https, http, git or a local path.

    The rules are `control.names.remote_url_problem`: nothing git or ssh could read as
    an option or a command, no remote helpers, no passwords.
    """
    problem = remote_url_problem(url)
    if problem is not None:
        shown = _display_url(url) if isinstance(url, str) and url else ""
        if not isinstance(url, str) or not url or "control characters" in problem:
            raise UsageError(f"invalid remote URL: {problem}")
        raise UsageError(f"invalid remote URL {shown!r}: {problem}")
    return url


def workspace_root(work_dir: Path, remote_url: str) -> Path:
    """Where the workspace of `remote_url` lives under a worker's work directory.

    One directory per remote, named after it and a hash of the whole URL.
    """
    validate_remote_url(remote_url)
    tail = re.sub(r"\.git$", "", remote_url.rstrip("/")).rpartition("/")[2]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", tail.rpartition(":")[2]).strip("._")[:40]
    digest = hashlib.sha256(remote_url.encode()).hexdigest()[:12]
    return work_dir / "repos" / f"{tail or 'repo'}-{digest}"


def _display_url(url: str) -> str:
    """`url` with any user information hidden, for messages."""
    match = _SCHEME.match(url)
    if not match:
        return url
    rest = url[match.end() :]
    authority, sep, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return url[: match.end()] + authority + sep + path


def _attempt_ref(ref: str) -> str:
    """An attempt's ref, checked like a branch name: nothing else may be pushed to."""
    if not ref.startswith("refs/superagent/attempts/"):
        raise UsageError(f"not an attempt ref: {ref!r}")
    validate_branch(ref.removeprefix("refs/"))
    return ref


def _wip_ref(ref: str) -> str:
    """A checkpoint's ref, checked like a branch name: never a result's or a branch."""
    if not ref.startswith(WIP_REF_PREFIX):
        raise UsageError(f"not a checkpoint ref: {ref!r}")
    validate_branch(ref.removeprefix("refs/"))
    return ref


def _validate_commit(commit: str, what: str) -> str:
    value = commit.lower() if isinstance(commit, str) else ""
    if not _COMMIT.fullmatch(value):
        raise UsageError(f"{what}: {commit!r} is not a full commit id (40 or 64 hex digits)")
    return value


def _validate_slot(slot: str) -> str:
    if not isinstance(slot, str) or not _SLOT.fullmatch(slot) or slot in (".", ".."):
        raise UsageError(
            f"invalid slot name {slot!r}: 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )
    return slot


def _validate_identity(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
        raise UsageError(f"the worker's git {what} must be one line of text, not {value!r}")
    if "<" in value or ">" in value:
        raise UsageError(f"the worker's git {what} cannot contain '<' or '>': {value!r}")
    return value


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = "; ".join(lines[-3:])
    if len(joined) > _STDERR_TAIL_CHARS:
        joined = "..." + joined[-_STDERR_TAIL_CHARS:]
    return joined


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


class Workspace:
    """The local clone of one remote, and a worktree per slot under `<root>/slots/`.

    Safe to share between the threads (and processes) of one worker: operations on the
    shared clone hold an exclusive lock on `<root>/workspace.lock`.
    """

    def __init__(
        self,
        root: Path,
        remote_url: str,
        *,
        author_name: str,
        author_email: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not timeout_s > 0:
            raise UsageError(f"the git timeout must be positive, not {timeout_s}")
        self.root = Path(root).absolute()
        self.remote_url = validate_remote_url(remote_url)
        self.author_name = _validate_identity(author_name, "author name")
        self.author_email = _validate_identity(author_email, "author email")
        self.timeout_s = float(timeout_s)
        self._display = _display_url(self.remote_url)

    @property
    def repo_path(self) -> Path:
        """The shared local clone (bare); every slot's worktree borrows its objects."""
        return self.root / "repo"

    @property
    def slots_path(self) -> Path:
        return self.root / "slots"

    def slot_path(self, slot: str) -> Path:
        """Where `slot`'s checkout lives."""
        return self.slots_path / _validate_slot(slot)

    # --- the phase's life: prepare, commit, push, release --------------------------------

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
        _validate_slot(slot)
        validate_branch(branch)
        validate_branch(base)
        wanted = []
        for prerequisite in prerequisites:
            validate_branch(prerequisite.branch)
            commit = _validate_commit(prerequisite.commit, f"prerequisite {prerequisite.phase!r}")
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

    def checkpoint(self, prepared: Prepared, ref: str, message: str) -> str | None:
        """Snapshot the checkout (every change, untracked files too, ignored ones not) as
        a commit on top of HEAD and push it to the checkpoint `ref`; the commit, or None
        when nothing changed since the prepared commit. Built in an index of its own:
        the agent's index and files are left exactly as they are.
        """
        ref = _wip_ref(ref)
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
        self._git(
            "push", "--porcelain", "--no-verify", "--quiet", "--force",
            "--", self.remote_url, f"{commit}:{ref}",
            cwd=path,
        )  # fmt: skip
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
        ref = _wip_ref(ref)
        path = self._checkout(prepared)
        if self.remote_ref(ref) is None:
            return None
        local = f"refs/superagent/resume/{prepared.slot}"
        with self._locked():
            self._git(
                "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                "--", self.remote_url, f"+{ref}:{local}",
                cwd=self.repo_path,
            )  # fmt: skip
            commit = self._rev_parse(self.repo_path, local)
        if not self._is_ancestor(path, prepared.head, commit):
            return None
        self._git("reset", "--hard", "--quiet", commit, "--", cwd=path)
        return commit

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
            self._git(
                "push", "--porcelain", "--no-verify", "--quiet", "--force",
                "--", self.remote_url, f"{head}:{_attempt_ref(ref)}",
                cwd=path,
            )  # fmt: skip
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
        return self.remote_ref(f"refs/heads/{validate_branch(branch)}")

    def promote(self, source_ref: str, commit: str, branch: str) -> None:
        """Point the remote `branch` at `commit`, taken from `source_ref` (an attempt's
        ref): how an accepted result becomes the phase's branch, and how a branch that
        was moved anyway is repaired. Nothing is checked out; no repository code runs.
        """
        commit = _validate_commit(commit, "commit")
        ref = f"refs/heads/{validate_branch(branch)}"
        if self.remote_ref(ref) == commit:
            return
        with self._locked():
            self._ensure_repo()
            self._git(
                "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                "--", self.remote_url, f"+{_attempt_ref(source_ref)}:refs/superagent/promote",
                cwd=self.repo_path,
            )  # fmt: skip
            self._git(
                "push", "--porcelain", "--no-verify", "--quiet", "--force",
                "--", self.remote_url, f"{commit}:{ref}",
                cwd=self.repo_path,
            )  # fmt: skip
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
        ref = _attempt_ref(ref)
        wanted = [_validate_commit(c, f"commit expected in {ref}") for c in commits]
        if self.remote_ref(ref) is None:
            return None, wanted
        with self._locked():
            self._ensure_repo()
            self._git(
                "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                "--", self.remote_url, f"+{ref}:refs/superagent/check",
                cwd=self.repo_path,
            )  # fmt: skip
            tip = self._rev_parse(self.repo_path, "refs/superagent/check")
            missing = [
                c
                for c in wanted
                if self._git(
                    "cat-file", "-e", "--end-of-options", f"{c}^{{commit}}",
                    cwd=self.repo_path, ok_codes=None,
                ).returncode != 0
                or not self._is_ancestor(self.repo_path, c, tip)
            ]  # fmt: skip
        return tip, missing

    def release(self, slot: str) -> None:
        """Remove `slot`'s checkout (whatever state it is in); nothing if there is none."""
        path = self.slot_path(slot)
        with self._locked():
            if (self.repo_path / "HEAD").is_file():
                self._clean_slot(path)
            elif path.exists() or path.is_symlink():
                remove_tree(path)

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

    # --- the shared clone -----------------------------------------------------------------

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
                    f"the git workspace {self.root} belongs to {_display_url(recorded)!r}, "
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
        exists = self._git(
            "cat-file", "-e", "--end-of-options", f"{prerequisite.commit}^{{commit}}",
            cwd=self.repo_path, ok_codes=None,
        )  # fmt: skip
        if exists.returncode != 0 or not self._is_ancestor(
            self.repo_path, prerequisite.commit, tip
        ):
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

    # --- inside a checkout ----------------------------------------------------------------

    def _merge(
        self, path: Path, prerequisite: PrerequisiteRef, *, keep_conflicts: bool = False
    ) -> dict[str, Any]:
        message = (
            f"superagent: merge prerequisite {prerequisite.phase} "
            f"({prerequisite.branch} at {prerequisite.commit[:12]})"
        )
        done = self._git(
            "merge", "--no-ff", "--no-edit", "--quiet", "-m", message,
            "--", prerequisite.commit,
            cwd=path, ok_codes=None,
        )  # fmt: skip
        if done.returncode != 0:
            conflicted = self._git(
                "diff", "--name-only", "-z", "--diff-filter=U", cwd=path, ok_codes=None
            )
            files = sorted({name for name in conflicted.stdout.split("\0") if name})
            if files and keep_conflicts:
                return self._keep_conflict(path, prerequisite, files, message)
            self._git("merge", "--abort", cwd=path, ok_codes=None)
            if files:
                raise MergeConflict(prerequisite, files)
            raise self._error(
                ("merge",),
                done.returncode,
                done.stderr or done.stdout,
                context=f"merging prerequisite {prerequisite.phase!r}",
            )
        return {
            "phase": prerequisite.phase,
            "branch": prerequisite.branch,
            "commit": prerequisite.commit,
            "head": self._rev_parse(path, "HEAD"),
        }

    def _keep_conflict(
        self, path: Path, prerequisite: PrerequisiteRef, files: list[str], message: str
    ) -> dict[str, Any]:
        """Commit a conflicted merge as it stands, markers and all, with each side's
        change to the conflicting files (cut to size) for the agent who resolves it."""

        def side(spec: str) -> str:
            done = self._git(
                "diff", "--no-color", "--no-ext-diff", "--no-textconv", spec, "--", *files,
                cwd=path, ok_codes=None,
            )  # fmt: skip
            return done.stdout[-CONFLICT_DIFF_CHARS:]

        ours, theirs = side("MERGE_HEAD...HEAD"), side("HEAD...MERGE_HEAD")
        self._git("add", "--all", "--", ".", cwd=path)
        self._git(
            "commit", "--no-verify", "--quiet", "--file=-",
            cwd=path, stdin=f"{message}\n\nconflicts left for the agent: {', '.join(files)}",
        )  # fmt: skip
        return {
            "phase": prerequisite.phase,
            "branch": prerequisite.branch,
            "commit": prerequisite.commit,
            "head": self._rev_parse(path, "HEAD"),
            "conflicts": files,
            "ours_diff": ours,
            "theirs_diff": theirs,
        }

    def _checkout(self, prepared: Prepared) -> Path:
        path = self.slot_path(prepared.slot)
        if path != prepared.path or not (path / ".git").exists():
            raise NotFoundError(
                f"slot {prepared.slot!r} has no checkout of {prepared.branch!r} (released?)"
            )
        return path

    def _rev_parse(self, cwd: Path, rev: str) -> str:
        done = self._git("rev-parse", "--verify", "--end-of-options", rev, cwd=cwd)
        return done.stdout.strip()

    def _is_ancestor(self, cwd: Path, ancestor: str, descendant: str) -> bool:
        done = self._git(
            "merge-base", "--is-ancestor", ancestor, descendant, cwd=cwd, ok_codes=(0, 1)
        )
        return done.returncode == 0

    # --- running git ----------------------------------------------------------------------

    def _env(self, checkout: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _ENV_KEEP}
        env.pop("SSH_ASKPASS", None)
        if "GIT_CONFIG_GLOBAL" not in env:
            # The machine's own file (credential helpers live there), never a path that
            # depends on a variable set later; absent HOME, none at all.
            home = env.get("HOME")
            env["GIT_CONFIG_GLOBAL"] = f"{home}/.gitconfig" if home else os.devnull
        if checkout is not None:
            # Named, never discovered: the checkout's `.git` is the agent's to replace.
            env.update(
                GIT_DIR=str(self.repo_path / "worktrees" / checkout.name),
                GIT_COMMON_DIR=str(self.repo_path),
                GIT_WORK_TREE=str(checkout),
            )
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            GIT_ALLOW_PROTOCOL=_ALLOWED_PROTOCOLS,
            GIT_AUTHOR_NAME=self.author_name,
            GIT_AUTHOR_EMAIL=self.author_email,
            GIT_COMMITTER_NAME=self.author_name,
            GIT_COMMITTER_EMAIL=self.author_email,
            LC_ALL="C",
        )
        return env

    def _git(
        self,
        *args: str,
        cwd: Path,
        stdin: str | None = None,
        ok_codes: tuple[int, ...] | None = (0,),
        index: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run git; raise GitError unless its exit code is in `ok_codes` (None: any).
        `index`: an index file of the worker's own instead of the checkout's."""
        argv = ["git"]
        for setting in _CONFIG:
            argv += ["-c", setting]
        argv += args
        self._pin_config()
        checkout = cwd if cwd.parent == self.slots_path and cwd.name != "" else None
        try:
            # Its own session: no terminal to prompt on, and a timeout kills the whole
            # group (ssh and the helpers git starts), not just git.
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self._env(checkout) | ({} if index is None else {"GIT_INDEX_FILE": str(index)}),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError:
            if not cwd.is_dir():
                raise NotFoundError(f"cannot run git in {cwd}: no such directory") from None
            raise UnavailableError("cannot run git: it is not installed (or not on PATH)") from None
        try:
            out, err = proc.communicate(
                stdin.encode() if stdin is not None else None, timeout=self.timeout_s
            )
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            raise GitError(
                f"`git {_subcommand(args)}` timed out after {self.timeout_s:g}s"
                + (f" (remote {self._display})" if self.remote_url in args else ""),
                command=f"git {_subcommand(args)}",
            ) from None
        done = subprocess.CompletedProcess(
            argv,
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )
        if ok_codes is not None and done.returncode not in ok_codes:
            raise self._error(args, done.returncode, done.stderr or done.stdout)
        return done

    def _pin_config(self) -> None:
        """Put back the shared clone's config if anything changed it; drop per-worktree
        config files (honoured only with an extension this config never sets, but gone
        is simpler to reason about)."""
        config = self.repo_path / "config"
        try:
            current = config.read_bytes()
        except FileNotFoundError:
            return  # no clone yet: `git init` writes it
        if current != _REPO_CONFIG:
            scratch = config.with_name(".config.superagent")
            scratch.write_bytes(_REPO_CONFIG)
            os.replace(scratch, config)
        for extra in (self.repo_path / "worktrees").glob("*/config.worktree"):
            extra.unlink(missing_ok=True)

    def _error(self, args: Sequence[str], code: int, output: str, *, context: str = "") -> GitError:
        command = f"git {_subcommand(args)}"
        tail = _tail(output.replace(self.remote_url, self._display))
        where = f" ({context})" if context else ""
        if self.remote_url in args or command in ("git push", "git fetch", "git ls-remote"):
            where = f" ({context + ', ' if context else ''}remote {self._display})"
        return GitError(
            f"`{command}` failed with exit code {code}{where}: {tail or 'no output'}",
            command=command,
            stderr_tail=tail,
        )


def _subcommand(args: Sequence[str]) -> str:
    """The git subcommand in `args` (skipping `-c name=value` pairs), with its verb."""
    words = list(args)
    while len(words) >= 2 and words[0] == "-c":
        words = words[2:]
    if not words:
        return ""
    if words[0] == "worktree" and len(words) > 1:
        return f"worktree {words[1]}"
    return words[0]
