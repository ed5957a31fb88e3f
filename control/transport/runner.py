"""The one wrapper around ansible-runner: every ad-hoc Ansible call goes through `AdHocRunner`.

Quiet, events collected in memory, a private data dir removed afterwards, no env
files, pipelining over a persistent SSH control path, host keys checked, a timeout
and a cancel callback; each host's outcome comes from its own result event.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from control.errors import UsageError, missing_extra
from control.names import host_name_problem

HostStatus = Literal["ok", "failed", "unreachable", "missing"]  # how one host's task ended
_RESULT_EVENTS: Mapping[str, HostStatus] = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
}
_LOG_EVENTS = ("verbose", "error", "warning", "deprecated")
_LOG_LINES = 20
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 10
DEFAULT_CONTROL_PERSIST_S = 300
MAX_FORKS = 50
MAX_EVENT_RES = 1 << 31
# superagent's own modules (control_queue_rpc), found ahead of any of the same name,
# and its callback plugin (control_preload: the forks' plugins loaded once, before them).
LIBRARY = Path(__file__).parent / "ansible_library"
CALLBACKS = Path(__file__).parent / "ansible_callbacks"
PRELOAD = "control_preload"


class Unsafe(str):
    """Text Ansible must never template: written to the extra-vars file as `!unsafe`."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", value))


def unsafe(value: Any) -> Any:
    """`value` with every string in it marked `!unsafe` (lists and mappings followed)."""
    if isinstance(value, str):
        return Unsafe(value)
    if isinstance(value, Mapping):
        return {str(k): unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unsafe(v) for v in value]
    return value


@dataclass(frozen=True)
class HostOutcome:
    """What one host's task ended as; `result` is the module's result (stdout, rc, msg...)."""

    host: str
    outcome: HostStatus
    result: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def error(self) -> str:
        """One line saying why the host has no usable result."""
        res = self.result
        parts = []
        if "rc" in res and res["rc"] not in (0, None):
            parts.append(f"exit {res['rc']}")
        for key in ("stderr", "msg", "module_stderr", "module_stdout"):
            text = str(res.get(key) or "").strip()
            if text:
                parts.append(text.splitlines()[-1][:500])
                break
        what = {"failed": "failed", "unreachable": "unreachable", "missing": "no result"}.get(
            self.outcome, self.outcome
        )
        return f"{what}: {'; '.join(parts) or 'no detail from Ansible'}"


@dataclass(frozen=True)
class AdHocResult:
    """ansible-runner's status and rc, one outcome per host asked for, the last log lines."""

    status: str
    rc: int | None
    hosts: Mapping[str, HostOutcome]
    log: Sequence[str] = ()


def _not_cancelled() -> bool:
    return False


def _first(ours: str, variable: str, separator: str) -> str:
    """`ours`, then what the environment already says in `variable`."""
    return separator.join(p for p in (ours, os.environ.get(variable)) if p)


def default_control_path_dir() -> Path:
    """A fixed, private directory for SSH ControlPersist sockets, so calls reuse connections."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "superagent" / "ansible-cp"


class AdHocRunner:
    """Runs one Ansible module on many hosts in one ansible-runner invocation.

    `calls` counts the invocations, so a caller (or a test) can check that a
    fan-out really was one call.
    """

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
        control_path_dir: Path | None = None,
        control_persist_s: int = DEFAULT_CONTROL_PERSIST_S,
        python_interpreter: str = "auto_silent",
        envvars: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.control_path_dir = control_path_dir or default_control_path_dir()
        self.control_persist_s = control_persist_s
        self.python_interpreter = python_interpreter
        self.extra_envvars = dict(envvars or {})
        self.calls = 0
        self._lock = threading.Lock()

    def envvars(self) -> dict[str, str]:
        bindir = str(Path(sys.executable).parent)  # the `ansible` next to this interpreter
        env = {
            "PATH": os.pathsep.join([bindir, os.environ.get("PATH", os.defpath)]),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_LIBRARY": _first(str(LIBRARY), "ANSIBLE_LIBRARY", os.pathsep),
            "ANSIBLE_CALLBACK_PLUGINS": _first(str(CALLBACKS), "ANSIBLE_CALLBACK_PLUGINS", ":"),
            "ANSIBLE_CALLBACKS_ENABLED": _first(PRELOAD, "ANSIBLE_CALLBACKS_ENABLED", ","),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_path_dir),
            "ANSIBLE_SSH_ARGS": (
                f"-o ControlMaster=auto -o ControlPersist={self.control_persist_s}s"
            ),
            # Never switched off, whatever the environment says.
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_TIMEOUT": str(self.connect_timeout_s),
            "ANSIBLE_TASK_TIMEOUT": str(max(1, int(self.timeout_s))),
            "ANSIBLE_PYTHON_INTERPRETER": self.python_interpreter,
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            # ansible-runner drops a result bigger than this (700 kB by default) from its
            # event; a result is how the answer comes back, so only memory may bound it.
            "MAX_EVENT_RES": str(MAX_EVENT_RES),
        }
        env.update(self.extra_envvars)
        env["ANSIBLE_HOST_KEY_CHECKING"] = "True"
        return env

    def run(
        self,
        *,
        inventory: Path | Mapping[str, Any],
        hosts: Sequence[str],
        module: str,
        args: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        templates: Mapping[str, str] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> AdHocResult:
        """Run `module` with `args` on `hosts`, in one ansible-runner invocation.

        `args` are ours and may hold templates; `data` becomes extra vars with every
        string marked `!unsafe`, read from a file (no size limit, not in any argv);
        `templates` are extra vars of ours that Ansible templates (they may read `data`).
        """
        try:
            import ansible_runner  # noqa: PLC0415  Ansible takes most of a second to import
        except ModuleNotFoundError as exc:
            raise missing_extra(exc, "the ansible transport") from exc

        if not hosts:
            return AdHocResult("successful", 0, {})
        for host in hosts:
            if problem := host_name_problem(host):
                raise UsageError(f"{host!r}: {problem}")
        self.control_path_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Path(tempfile.mkdtemp(prefix="superagent-ansible-"))
        outcomes: dict[str, HostOutcome] = {}
        log: list[str] = []
        wanted = set(hosts)

        def on_event(event: Mapping[str, Any]) -> bool:
            kind = event.get("event", "")
            data_ = event.get("event_data") or {}
            if kind in _RESULT_EVENTS and data_.get("host") in wanted:
                outcomes[data_["host"]] = HostOutcome(
                    data_["host"], _RESULT_EVENTS[kind], dict(data_.get("res") or {})
                )
            elif kind in _LOG_EVENTS or (not kind and event.get("stdout")):
                log.extend(str(event.get("stdout") or "").splitlines())
                del log[:-_LOG_LINES]
            return False  # nothing is written to the artifacts' job_events

        try:
            if isinstance(inventory, Mapping):
                inventory_path = private / "inventory.json"
                inventory_path.write_text(json.dumps(inventory), encoding="utf-8")
            else:
                # ansible-runner runs from its private dir: a relative path would miss.
                inventory_path = Path(inventory).absolute()
            extravars = None
            if data or templates:
                extravars = private / "extravars.yml"
                with extravars.open("w", encoding="utf-8") as handle:
                    os.fchmod(handle.fileno(), 0o600)
                    every = {**unsafe(data or {}), **(templates or {})}
                    yaml.dump(every, handle, Dumper=_Dumper, allow_unicode=True)
            with self._lock:
                self.calls += 1
            runner = ansible_runner.run(
                private_data_dir=str(private),
                inventory=str(inventory_path),
                host_pattern=",".join(hosts),
                module=module,
                module_args=json.dumps(args),
                extravars=str(extravars) if extravars else None,
                envvars=self.envvars(),
                forks=max(1, min(len(hosts), MAX_FORKS)),
                timeout=max(1, int(self.timeout_s)),
                quiet=True,
                json_mode=True,
                suppress_env_files=True,
                # Not jsonfile (ansible-runner's default): a call gathers no facts, and that
                # cache looked each host up on disk as its variables were put together.
                fact_cache_type="memory",
                event_handler=on_event,
                # Never None: without a callback ansible-runner installs its own SIGINT and
                # SIGTERM handlers for good, and Ctrl-C no longer stops the command.
                cancel_callback=cancel or _not_cancelled,
            )
            status, rc = str(runner.status), runner.rc
        finally:
            shutil.rmtree(private, ignore_errors=True)
        missing = {"msg": f"ansible-runner {status} (rc {rc}): {log[-1] if log else 'no output'}"}
        return AdHocResult(
            status,
            rc,
            {h: outcomes.get(h) or HostOutcome(h, "missing", missing) for h in hosts},
            tuple(log),
        )
