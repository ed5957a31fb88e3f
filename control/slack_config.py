"""The Slack agent's settings (`superagent_slack_agent` in the inventory's group vars),
checked whole before it connects: tokens and the signing secret by reference only (an
environment variable, a 0600 file or a systemd credential), allow-lists of Slack user
ids per command class, the directory `dispatch` may take specs from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import UsageError
from control.inventory import Worker
from control.notify.config import Secret

_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SECRETS = ("app_token", "bot_token", "signing_secret")
_KEYS = {f"{name}_{how}" for name in _SECRETS for how in ("env", "file", "credential")} | {
    "allow",
    "base_url",
    "specs_dir",
}


@dataclass(frozen=True)
class AgentConfig:
    app_token: Secret  # Socket Mode (xapp-...); not needed in HTTP mode
    bot_token: Secret
    read_users: frozenset[str]
    act_users: frozenset[str]
    base_url: str | None = None
    specs_dir: Path | None = None  # `dispatch <name>` takes specs from here only
    signing_secret: Secret = field(default_factory=Secret)  # HTTP mode: Slack's signing secret


def load_agent_config(document: Any, source: str, base: Path | None = None) -> AgentConfig:
    """`act` users may also read; a one-line error names the setting that is wrong."""
    if not isinstance(document, Mapping):
        raise UsageError(f"{source}: expected a mapping")
    unknown = sorted(set(document) - _KEYS)
    if unknown:
        raise UsageError(f"{source}.{unknown[0]}: not a Slack agent setting")
    found = {name: _secret(document, name, source, base) for name in _SECRETS}
    if not found["bot_token"]:
        raise UsageError(
            f"{source}: set one of bot_token_env, bot_token_file, bot_token_credential"
        )
    allow = document.get("allow") or {}
    if not isinstance(allow, Mapping) or set(allow) - {"read", "act"}:
        raise UsageError(f"{source}.allow: a mapping with `read` and `act` lists of user ids")
    lists: dict[str, frozenset[str]] = {}
    for name in ("read", "act"):
        users = allow.get(name) or []
        if not isinstance(users, list) or not all(
            isinstance(u, str) and _USER.match(u) for u in users
        ):
            raise UsageError(f"{source}.allow.{name}: a list of Slack user ids (U0123ABCD)")
        lists[name] = frozenset(users)
    base_url = document.get("base_url")
    specs = document.get("specs_dir")
    if specs is not None and (not isinstance(specs, str) or not specs):
        raise UsageError(f"{source}.specs_dir: a directory, got {specs!r}")
    specs_dir = None if specs is None else _path(specs, base)
    return AgentConfig(
        found["app_token"],
        found["bot_token"],
        lists["read"] | lists["act"],
        lists["act"],
        base_url if isinstance(base_url, str) else None,
        specs_dir,
        found["signing_secret"],
    )


def _path(value: str, base: Path | None) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _secret(document: Mapping[str, Any], name: str, source: str, base: Path | None) -> Secret:
    given = [how for how in ("env", "file", "credential") if document.get(f"{name}_{how}")]
    if len(given) > 1:
        raise UsageError(f"{source}: set one of {name}_env, {name}_file, {name}_credential")
    if not given:
        return Secret()
    value = str(document[f"{name}_{given[0]}"])
    if given[0] == "env":
        return Secret(env=value)
    if given[0] == "credential":
        return Secret(credential=value)
    return Secret(file=_path(value, base))


def from_inventory(inventory: Path, workers: Sequence[Worker]) -> AgentConfig:
    values = workers[0].vars if workers else {}
    document = values.get("superagent_slack_agent")
    if document is None:
        raise UsageError(f"{inventory}: no superagent_slack_agent in the inventory's group vars")
    return load_agent_config(document, f"{inventory}: superagent_slack_agent", inventory)
