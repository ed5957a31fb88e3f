"""Names that reach git or a host's command line: branch names, worker names, repo URLs.

A name that git would refuse, or that a command would read as an option, is
caught here before it is ever passed after `--` to git, ssh or Ansible.
"""

from __future__ import annotations

import re

from control.errors import UsageError

_HOST_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def branch_name_problem(name: str) -> str | None:
    """Why `git check-ref-format --branch` (or `git branch`) would refuse `name`, or None."""
    if bad := _BAD_REF_CHARS.search(name):
        char = bad.group()
        shown = repr(char) if char.isprintable() and char != " " else f"U+{ord(char):04X}"
        return f"a branch name cannot contain {shown} (no spaces, control characters, ~^:?*[\\)"
    rules = (
        (not name, "a branch name cannot be empty"),
        (name.startswith("-"), "a branch name cannot start with '-' (git would read an option)"),
        (name in ("HEAD", "@"), f"{name!r} is reserved by git"),
        (".." in name, "a branch name cannot contain '..'"),
        ("@{" in name, "a branch name cannot contain '@{'"),
        (
            name.startswith("/") or name.endswith("/") or "//" in name,
            "a branch name cannot start or end with '/' or contain '//'",
        ),
        (name.endswith("."), "a branch name cannot end with '.'"),
    )
    for broken, why in rules:
        if broken:
            return why
    for part in name.split("/"):
        if part.startswith("."):
            return f"a component of a branch name cannot start with '.' ({part!r})"
        if part.endswith(".lock"):
            return f"a component of a branch name cannot end with '.lock' ({part!r})"
    return None


def host_name_problem(name: str) -> str | None:
    """Why `name` is not a safe worker name (it reaches ssh and Ansible as an argument), or None."""
    if not name:
        return "a worker name cannot be empty"
    if name.startswith("-"):
        return "a worker name cannot start with '-'"
    if not _HOST_NAME.fullmatch(name):
        return "a worker name may hold only letters, digits, '.', '_' and '-'"
    return None


_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"[^/:]+:")  # [user@]host:path, git's own reading (a ':' before any '/')


def repo_url_problem(url: str) -> str | None:
    """Why every worker could not clone `url` the same way, or None.

    The answer reads after the quoted URL. Workers clone from their own
    directories, so a relative path would name a different place on each.
    """
    if url.startswith("-"):
        return "starts with '-', which git would read as an option"
    if _URL_SCHEME.match(url) or url.startswith("/"):
        return None
    if _SCP_LIKE.match(url) and not url.startswith("./"):
        return None
    return (
        "is a relative path, which each worker would read from its own directory; "
        "give a URL (git@host:team/project.git, https://...) or an absolute path"
    )


def require_repo_url(url: str, what: str) -> None:
    """UsageError unless every worker could clone `url` the same way (`what` names it)."""
    if problem := repo_url_problem(url):
        raise UsageError(f"{what} {url!r} {problem}")
