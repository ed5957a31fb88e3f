"""Secrets on a worker: the values of the credentials it holds, and the shapes of common
tokens. A diff that carries one is never committed; text that leaves the worker (verify
output, responses, logs) has the known values masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from control.errors import SuperagentError, UsageError
from control.process import Redactor
from control.worker.agents.base import load_credentials
from control.worker.config import WorkerConfig

_MIN_SECRET_CHARS = 8  # shorter values would match innocent text
_READ_LIMIT = 16 * 1024 * 1024  # a file bigger than this is scanned in its first 16 MiB
TOKEN_SHAPES: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("an Anthropic API key", re.compile(rb"sk-ant-[A-Za-z0-9_-]{20,}")),
    ("an OpenAI API key", re.compile(rb"sk-(?:proj-)?[A-Za-z0-9_-]{40,}")),
    (
        "a GitHub token",
        re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    ),
    ("an AWS access key id", re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Slack token", re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Google API key", re.compile(rb"\bAIza[0-9A-Za-z_-]{35}")),
    ("a private key", re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
)


_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def account_credential(config: WorkerConfig, account: Any) -> Path | None:
    """The credential file of the task's account (None: no account, the worker's own).

    UsageError, naming the account and the file expected, when this host holds none:
    the account's `hosts` say otherwise, or the role has not installed it yet.
    """
    if account is None:
        return config.credential_file
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise UsageError(f"the task names no valid account: {str(account)[:80]!r}")
    if config.accounts_dir is None:
        raise UsageError(
            f"the task runs on account {account!r}, but worker {config.worker_id} has no "
            "accounts_dir"
        )
    path = config.accounts_dir / f"{account}.env"
    if not path.is_file():
        raise UsageError(
            f"worker {config.worker_id} holds no credential for account {account!r} ({path})"
        )
    return path


def known_secrets(config: WorkerConfig) -> list[str]:
    """The values of every credential this worker holds (its credential file and each
    account's), for masking and for the diff check. An unreadable file holds none we
    could leak."""
    files = [] if config.credential_file is None else [config.credential_file]
    if config.accounts_dir is not None and config.accounts_dir.is_dir():
        files += sorted(config.accounts_dir.glob("*.env"))
    found: list[str] = []
    for path in files:
        try:
            values = load_credentials(path).values()
        except SuperagentError:
            continue
        found += [v for v in values if len(v) >= _MIN_SECRET_CHARS and v not in found]
    return found


def secrets_in_files(root: Path, paths: Sequence[str], secrets: Iterable[str]) -> list[str]:
    """Each of `paths` (relative to `root`) that holds a known secret value or a token
    shape, as `path (what)`; never the secret itself. Symlinks are judged by their target
    text, not followed."""
    needles = [s.encode() for s in secrets if len(s) >= _MIN_SECRET_CHARS]
    found = []
    for relative in paths:
        path = root / relative
        try:
            if path.is_symlink():
                data = str(path.readlink()).encode()
            elif path.is_file():
                with path.open("rb") as handle:
                    data = handle.read(_READ_LIMIT)
            else:
                continue
        except OSError:
            continue
        what = _what(data, needles)
        if what is not None:
            found.append(f"{relative} ({what})")
    return found


def _what(data: bytes, needles: Sequence[bytes]) -> str | None:
    if any(needle in data for needle in needles):
        return "the value of a credential this worker holds"
    for name, shape in TOKEN_SHAPES:
        if shape.search(data):
            return f"something shaped like {name}"
    return None


def redact_tree(value: Any, redact: Redactor) -> Any:
    """`value` (JSON-like) with every string masked by `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v, redact) for v in value]
    return value
