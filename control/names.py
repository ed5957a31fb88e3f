"""Names that reach git or a host's command line: branch names, worker names, remote URLs.

A name that git would refuse, or that a command would read as an option, is
caught here before it is ever passed after `--` to git, ssh or Ansible.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from control.errors import UsageError

_HOST_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_URL_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_HELPER_SYNTAX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
REMOTE_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git", "https", "http", "git", "file"})
# What ssh receives as its host and user: plain names, or a bracketed IPv6 address.
_URL_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\]")
_URL_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+~-]*")


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


def remote_url_problem(url: str, *, relative_ok: bool = False) -> str | None:
    """Why `url` is not a git remote this project accepts, or None.

    Accepted: ssh, https, http, git and file URLs, scp-like `[user@]host:path`, and absolute
    paths. Refused, because git or ssh could read part of them as an option or a command:
    a leading '-', spaces and control characters, remote helpers (`ext::`, `fd::`), other
    schemes, a user or host that is not a plain name (`ssh://-oProxyCommand=x@h/a`,
    `[-oProxyCommand=x]:a`, '%'-escapes), relative paths unless `relative_ok` (a spec's
    URL may be relative to the spec); and passwords.
    """
    if not isinstance(url, str) or not url:
        return "the remote URL cannot be empty"
    rules = (
        (url.startswith("-"), "it cannot start with '-' (git would read an option)"),
        (
            _HELPER_SYNTAX.match(url) is not None,
            "remote helpers ('<transport>::', such as ext:: and fd::) can run commands",
        ),
        (
            _URL_SPACE_OR_CONTROL.search(url) is not None,
            "it cannot contain spaces or control characters",
        ),
    )
    for broken, why in rules:
        if broken:
            return why
    if scheme := _SCHEME.match(url):
        return _scheme_url_problem(url, scheme.group(1).lower())
    before_colon = url.partition(":")[0]
    if url.startswith("[") or (":" in url and "/" not in before_colon):
        return _scp_url_problem(url)
    if not relative_ok and not os.path.isabs(url):
        return "a local repository must be an absolute path"
    return None


def _scheme_url_problem(url: str, scheme: str) -> str | None:
    if scheme not in REMOTE_SCHEMES:
        return f"the scheme {scheme!r} is not one of {', '.join(sorted(REMOTE_SCHEMES))}"
    authority = url[url.index("://") + 3 :].partition("/")[0]
    if scheme == "file":
        return None if authority in ("", "localhost") else "a file URL cannot name a host"
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        return (
            "it carries a password; the worker uses its machine's SSH key or credential "
            "helper, never credentials from the spec"
        )
    if at and not _URL_USER.fullmatch(userinfo):
        return f"the user {userinfo!r} is not a plain name (no leading '-', no '%'-escapes)"
    return _host_port_problem(url, hostport)


def _host_port_problem(url: str, hostport: str) -> str | None:
    try:
        port = urlsplit(url).port
    except ValueError:
        return "bad host or port"
    host = hostport.rpartition(":")[0] if port is not None or hostport.endswith(":") else hostport
    if not host or not _URL_HOST.fullmatch(host):
        return "bad host: a host is a plain name or a bracketed IPv6 address"
    return None


def _scp_url_problem(url: str) -> str | None:
    """`[user@]host:path` or `[user@][host]:path`, as git reads it (brackets first)."""
    if url.startswith("[") or "@[" in url:
        user, at, rest = url.partition("@[") if "@[" in url else ("", "", url[1:])
        host, closed, path = rest.partition("]")
        if not closed or not path.startswith(":"):
            return "bad host: a bracketed host must be followed by ':'"
        if not re.fullmatch(r"[0-9A-Fa-f:.]+", host):
            return "bad host: brackets may hold only an IPv6 address"
    else:
        userhost = url.partition(":")[0]
        user, at, host = userhost.rpartition("@")
        if not host or not _URL_HOST.fullmatch(host):
            return "bad host: a host is a plain name or a bracketed IPv6 address"
    if at and not _URL_USER.fullmatch(user):
        return f"the user {user!r} is not a plain name (no leading '-', no '%'-escapes)"
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
