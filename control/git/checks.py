"""What git is given, checked first: branch and ref names, remote URLs, commit ids, slot
names and the worker's identity, each refused with a message naming it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from control.errors import UsageError
from control.messages import WIP_REF_PREFIX
from control.names import branch_name_problem, remote_url_problem

_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_SLOT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


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
        shown = display_url(url) if isinstance(url, str) and url else ""
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


def display_url(url: str) -> str:
    """`url` with any user information hidden, for messages."""
    match = _SCHEME.match(url)
    if not match:
        return url
    rest = url[match.end() :]
    authority, sep, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return url[: match.end()] + authority + sep + path


def checked_attempt_ref(ref: str) -> str:
    """An attempt's ref, checked like a branch name: nothing else may be pushed to."""
    if not ref.startswith("refs/superagent/attempts/"):
        raise UsageError(f"not an attempt ref: {ref!r}")
    validate_branch(ref.removeprefix("refs/"))
    return ref


def checked_wip_ref(ref: str) -> str:
    """A checkpoint's ref, checked like a branch name: never a result's or a branch."""
    if not ref.startswith(WIP_REF_PREFIX):
        raise UsageError(f"not a checkpoint ref: {ref!r}")
    validate_branch(ref.removeprefix("refs/"))
    return ref


def validate_commit(commit: str, what: str) -> str:
    value = commit.lower() if isinstance(commit, str) else ""
    if not _COMMIT.fullmatch(value):
        raise UsageError(f"{what}: {commit!r} is not a full commit id (40 or 64 hex digits)")
    return value


def validate_slot(slot: str) -> str:
    if not isinstance(slot, str) or not _SLOT.fullmatch(slot) or slot in (".", ".."):
        raise UsageError(
            f"invalid slot name {slot!r}: 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )
    return slot


def validate_identity(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
        raise UsageError(f"the worker's git {what} must be one line of text, not {value!r}")
    if "<" in value or ">" in value:
        raise UsageError(f"the worker's git {what} cannot contain '<' or '>': {value!r}")
    return value
