"""Where notifications go: the fleet's sinks, read once from the inventory (group var
`superagent_notify`, or a file named by `superagent_notify_file`), checked whole
before anything is sent. Secrets are named here, never written here: each comes from
an environment variable or a file only its owner can read (0600).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from control.errors import UsageError
from control.events import KINDS
from control.inventory import Worker

SINK_TYPES = ("webhook", "slack", "apprise")

# What a person needs to hear about, unless a sink says otherwise.
DEFAULT_KINDS = (
    "run_created",
    "run_resumed",
    "run_done",
    "run_failed",
    "run_cancelled",
    "merge_failed",
    "phase_retry",
    "phase_reopened",
    "phase_dead",
    "phase_stuck",
    "worker_down",
    "worker_up",
    "alert_pending",
    "rate_limit_hold",
    "rate_limit_resumed",
    "budget_stop",
    "budget_alarm",
)

_COMMON = {"name", "type", "kinds", "group_s", "min_interval_s", "timeout_s"}
_KEYS = {
    "webhook": _COMMON | {"url", "secret_env", "secret_file"},
    "slack": _COMMON
    | {"channel", "token_env", "token_file", "webhook_url_env", "webhook_url_file", "base_url"},
    "apprise": _COMMON | {"urls_env", "urls_file"},
}


@dataclass(frozen=True)
class Secret:
    """A secret by reference: resolved when a sink is built, never stored or printed."""

    env: str | None = None
    file: Path | None = None
    credential: str | None = None  # a systemd credential (LoadCredential=) of that name

    def __bool__(self) -> bool:
        return self.env is not None or self.file is not None or self.credential is not None

    def __repr__(self) -> str:
        return f"Secret(env={self.env!r}, file={self.file!r}, credential={self.credential!r})"

    def value(self, where: str) -> str:
        if self.credential is not None:
            # systemd lets only the unit's user read it: no mode of ours to check.
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise UsageError(
                    f"{where}: credential {self.credential!r} asked for, but no "
                    "$CREDENTIALS_DIRECTORY (not started by systemd with LoadCredential=)"
                )
            try:
                text = (Path(directory) / self.credential).read_text().strip()
            except OSError as exc:
                raise UsageError(
                    f"{where}: cannot read credential {self.credential!r} ({exc.strerror})"
                ) from exc
            if not text:
                raise UsageError(f"{where}: credential {self.credential!r} is empty")
            return text
        if self.env is not None:
            found = os.environ.get(self.env)
            if not found:
                raise UsageError(f"{where}: environment variable {self.env} is not set")
            return found
        if self.file is None:
            raise UsageError(f"{where}: no secret configured")
        try:
            mode = self.file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UsageError(
                    f"{where}: {self.file} is readable by others (mode {stat.S_IMODE(mode):o}); "
                    "chmod 600 it"
                )
            text = self.file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read {self.file} ({exc.strerror})") from exc
        if not text:
            raise UsageError(f"{where}: {self.file} is empty")
        return text


@dataclass(frozen=True)
class SinkConfig:
    name: str
    type: str
    kinds: frozenset[str]
    group_s: float = 0.25  # events this close together go out as one message
    min_interval_s: float = 1.0  # at most one message per this long, per sink (webhook: 0.2)
    timeout_s: float = 10.0
    url: str | None = None
    secret: Secret = field(default_factory=Secret)
    secret_is: str = ""  # secret, token, webhook_url or urls: what the secret is
    channel: str | None = None
    base_url: str | None = None


@dataclass(frozen=True)
class NotifyConfig:
    sinks: tuple[SinkConfig, ...] = ()
    source: str = ""


def load_config(document: Any, source: str, base: Path | None = None) -> NotifyConfig:
    """Check a whole configuration (a mapping with `sinks:`); a one-line error names
    the file and the entry (`sinks[1].kinds`) that is wrong."""
    if document is None:
        return NotifyConfig((), source)
    if not isinstance(document, Mapping) or set(document) - {"sinks"}:
        raise UsageError(f"{source}: expected a mapping with one key, `sinks`")
    entries = document.get("sinks") or []
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise UsageError(f"{source}: sinks must be a list")
    sinks: list[SinkConfig] = []
    for index, entry in enumerate(entries):
        sinks.append(_sink(entry, f"{source}: sinks[{index}]", base))
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise UsageError(f"{source}: sink names must be unique, got {names}")
    return NotifyConfig(tuple(sinks), source)


def _sink(entry: Any, where: str, base: Path | None) -> SinkConfig:
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where}: expected a mapping")
    kind = entry.get("type")
    if kind not in SINK_TYPES:
        raise UsageError(f"{where}.type: one of {', '.join(SINK_TYPES)}, got {kind!r}")
    unknown = sorted(set(entry) - _KEYS[kind])
    if unknown:
        raise UsageError(f"{where}.{unknown[0]}: not a {kind} sink setting")
    name = entry.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"{where}.name: a name of letters, digits, '-' and '_', got {name!r}")
    kinds = entry.get("kinds", list(DEFAULT_KINDS))
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise UsageError(f"{where}.kinds: a list of event kinds")
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise UsageError(f"{where}.kinds: unknown event kind {bad[0]!r} (see docs/events.md)")
    numbers = {}
    # Slack allows about one message a second per channel; a webhook can take more.
    interval = 0.2 if kind == "webhook" else 1.0
    for key, default in (("group_s", 0.25), ("min_interval_s", interval), ("timeout_s", 10.0)):
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UsageError(f"{where}.{key}: a number of seconds, got {value!r}")
        numbers[key] = float(value)
    secret_is, secret = _secret(entry, where, base, kind)
    url = entry.get("url")
    if kind == "webhook":
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UsageError(f"{where}.url: an http(s) URL, got {url!r}")
        if not secret:
            raise UsageError(f"{where}: a webhook needs secret_env or secret_file (its key)")
    channel = entry.get("channel")
    if kind == "slack" and ("token_env" in entry or "token_file" in entry) and not channel:
        raise UsageError(f"{where}.channel: a bot token posts to a channel id; name it")
    base_url = entry.get("base_url")
    return SinkConfig(
        name=name,
        type=kind,
        kinds=frozenset(kinds),
        url=url,
        secret=secret,
        secret_is=secret_is,
        channel=channel if isinstance(channel, str) else None,
        base_url=base_url if isinstance(base_url, str) else None,
        **numbers,
    )


def _secret(
    entry: Mapping[str, Any], where: str, base: Path | None, kind: str
) -> tuple[str, Secret]:
    prefixes = {"webhook": ("secret",), "slack": ("token", "webhook_url"), "apprise": ("urls",)}
    found = [
        (prefix, suffix)
        for prefix in prefixes[kind]
        for suffix in ("env", "file")
        if f"{prefix}_{suffix}" in entry
    ]
    if len(found) > 1:
        keys = ", ".join(f"{p}_{s}" for p, s in found)
        raise UsageError(f"{where}: one secret only, got {keys}")
    if not found:
        if kind != "webhook":
            raise UsageError(
                f"{where}: no secret: set one of "
                + ", ".join(f"{p}_env/{p}_file" for p in prefixes[kind])
            )
        return "", Secret()
    prefix, suffix = found[0]
    value = entry[f"{prefix}_{suffix}"]
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}.{prefix}_{suffix}: a name, got {value!r}")
    if suffix == "env":
        return prefix, Secret(env=value)
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return prefix, Secret(file=path)


def from_inventory(inventory: Path, workers: Sequence[Worker]) -> NotifyConfig:
    """The fleet's sinks: `superagent_notify` (inline) or the file that
    `superagent_notify_file` names (relative to the inventory); none when neither is set."""
    values = workers[0].vars if workers else {}
    inline = values.get("superagent_notify")
    named = values.get("superagent_notify_file")
    if inline is not None and named is not None:
        raise UsageError(f"{inventory}: set superagent_notify or superagent_notify_file, not both")
    if named is not None:
        return from_file(Path(str(named)), inventory)
    return load_config(inline, f"{inventory}: superagent_notify", inventory)


def from_file(path: Path, base: Path | None = None) -> NotifyConfig:
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the notification settings ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not YAML ({' '.join(str(exc).split())})") from exc
    return load_config(document, str(path), path.parent)
