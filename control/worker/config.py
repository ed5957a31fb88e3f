"""A worker's settings: where its inbox, work and logs live, its slots, its pins.

They come from a TOML file (written by the Ansible `worker` role, by default
`/etc/superagent/worker.toml`, or `$SUPERAGENT_WORKER_CONFIG`), and command-line
options override single fields. Unknown keys are errors, so a typo is not ignored.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from control import __version__
from control.errors import NotFoundError, UsageError
from control.paths import default_home

DEFAULT_CONFIG = Path("/etc/superagent/worker.toml")
WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
OTHER_AGENTS = ("codex", "gemini", "opencode")  # agent CLIs besides Claude Code, by backend
CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


@dataclass(frozen=True)
class Pins:
    """Exact versions this worker must run; None means "not pinned" (checked as absent)."""

    node: str | None = None
    claude_code: str | None = None
    superagent: str | None = __version__
    # The other agent CLIs, pinned only where the host has them installed.
    codex: str | None = None
    gemini: str | None = None
    opencode: str | None = None


@dataclass(frozen=True)
class WorkerConfig:
    """One worker's settings, read once at start: worker.toml, then the command line's
    overrides, checked as a whole (`__post_init__`)."""

    worker_id: str
    queue_db: Path
    work_dir: Path
    logs_dir: Path
    slots: int = 1
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 30.0  # the fallback when inotify is not available or misses
    inotify: bool = True  # wake on inbox changes; False: poll every poll_seconds only
    keep_logs: int = 200
    # Acknowledged messages older than this are pruned from the inbox (at start, then
    # hourly), so a year of use does not slow the inbox; 0 keeps everything.
    prune_days: float = 30.0
    credential_file: Path | None = None
    # A systemd credential's name (the unit's LoadCredential=): read from
    # $CREDENTIALS_DIRECTORY, which systemd gives the unit's processes only; it sets
    # credential_file when the worker runs there, and nothing elsewhere.
    credential: str | None = None
    # One 0600 `<account>.env` per agent account this host may use (the inventory's
    # superagent_accounts): a task names its account, never carries its secret.
    accounts_dir: Path | None = None
    # One Claude Code configuration directory per account, <root>/<account> (the role
    # makes them): an account's login and sessions are its own, never another's.
    claude_config_root: Path | None = None
    node: str = "node"  # executables, found on PATH unless given as paths
    claude: str = "claude"
    codex: str = "codex"
    gemini: str = "gemini"
    opencode: str = "opencode"
    git_author_name: str = "superagent worker"
    git_author_email: str = "superagent@localhost"
    # The inventory's `superagent_trusted_host`: agents run as the worker, unsandboxed.
    trusted_host: bool = False
    # More paths the sandbox shows read-only (an agent's install directory), and, for
    # tests' instrumentation only, writable; never the inbox, work, logs or a home.
    sandbox_read_only: tuple[Path, ...] = ()
    sandbox_writable: tuple[Path, ...] = ()
    pins: Pins = field(default_factory=Pins)

    def agent_executables(self) -> list[str]:
        """The other agent CLIs this worker is pinned to (installed here): their executables."""
        return [getattr(self, name) for name in OTHER_AGENTS if getattr(self.pins, name)]

    def __post_init__(self) -> None:
        if not WORKER_ID.match(self.worker_id):
            raise UsageError(
                f"worker id {self.worker_id!r} must be 1-63 letters, digits, '.', '_' or '-', "
                "not starting with a punctuation mark"
            )
        if not 1 <= self.slots <= 64:
            raise UsageError(f"slots must be between 1 and 64, got {self.slots}")
        for path in self.sandbox_writable:
            guarded = (self.queue_db.parent, self.work_dir, self.logs_dir, Path.home())
            if not path.is_absolute() or any(
                g == path or g.is_relative_to(path) or path.is_relative_to(g) for g in guarded
            ):
                raise UsageError(
                    f"sandbox_writable {str(path)!r} must be an absolute path apart from the "
                    "inbox, work and log directories and the worker's home"
                )
        if not self.lease_seconds > 3 * self.heartbeat_seconds:
            raise UsageError(
                f"lease_seconds ({self.lease_seconds:g}) must exceed three heartbeats "
                f"({self.heartbeat_seconds:g}s each) so one late renew does not lose the lease"
            )


def _from_mapping(data: dict[str, Any], source: str) -> WorkerConfig:
    names = {f.name for f in fields(WorkerConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{source}: unknown worker settings: {', '.join(unknown)}")
    pins_data = data.pop("pins", {}) or {}
    pin_names = {f.name for f in fields(Pins)}
    if not isinstance(pins_data, dict) or set(pins_data) - pin_names:
        raise UsageError(f"{source}: [pins] takes only {', '.join(sorted(pin_names))}")
    for name in (
        "queue_db", "work_dir", "logs_dir", "credential_file", "accounts_dir", "claude_config_root",
    ):  # fmt: skip
        if data.get(name) is not None:
            data[name] = Path(data[name])
    if (credential := data.get("credential")) is not None:
        data["credential_file"] = _systemd_credential(credential, source)
    for name in ("sandbox_read_only", "sandbox_writable"):
        value = data.get(name, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str | Path) for v in value):
            raise UsageError(f"{source}: {name} must be a list of paths")
        data[name] = tuple(Path(v) for v in value)
    try:
        return WorkerConfig(**data, pins=Pins(**pins_data))
    except TypeError as exc:
        raise UsageError(f"{source}: {exc}") from exc


def _systemd_credential(name: Any, source: str) -> Path | None:
    """Where systemd put credential `name` for this process (None outside the unit)."""
    if not isinstance(name, str) or not CREDENTIAL_NAME.match(name):
        raise UsageError(f"{source}: credential must be a systemd credential name, got {name!r}")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(directory) / name if directory else None


def default_config(home: Path, worker_id: str | None = None) -> WorkerConfig:
    """A worker living entirely under `home` (the demo, tests, a terminal session)."""
    return WorkerConfig(
        worker_id=worker_id or socket.gethostname().split(".")[0],
        queue_db=home / "queue.db",
        work_dir=home / "work",
        logs_dir=home / "logs",
    )


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> WorkerConfig:
    """Read the TOML file (if any) and apply overrides (None values are ignored).

    Without a file, the worker lives under $SUPERAGENT_HOME (see `default_config`).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if path is None and os.environ.get("SUPERAGENT_WORKER_CONFIG"):
        path = Path(os.environ["SUPERAGENT_WORKER_CONFIG"])
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is None:
        base = default_config(default_home(), overrides.get("worker_id"))
        data: dict[str, Any] = {f.name: getattr(base, f.name) for f in fields(WorkerConfig)}
        data["pins"] = {f.name: getattr(base.pins, f.name) for f in fields(Pins)}
        source = "defaults"
    else:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise NotFoundError(f"{path}: no worker configuration here") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read ({exc.strerror})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML: {exc}") from exc
        source = str(path)
    pin_overrides = {k[4:]: v for k, v in overrides.items() if k.startswith("pin_")}
    data.update({k: v for k, v in overrides.items() if not k.startswith("pin_")})
    if pin_overrides:
        data["pins"] = {**(data.get("pins") or {}), **pin_overrides}
    return _from_mapping(data, source)
