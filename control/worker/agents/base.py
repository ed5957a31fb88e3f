"""What every agent backend takes and gives back, and the pieces they share.

A backend gets an `AgentRequest` (the phase task, the checkout, the limits, where to log)
and returns an `AgentResult`; it raises only for a request it cannot understand.
Anything that goes wrong while the agent runs is a result with a status and a reason,
so the worker can report it.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from control.errors import UsageError
from control.messages import AgentOptions, PhaseTask
from control.process import ProcessOutcome, Wrap
from control.worker.prompt import (
    Conflict,
    build_feedback_prompt,
    build_prompt,
    completion_marker,
)

Status = Literal["ok", "failed", "rate_limited", "cancelled", "timeout"]
STATUSES: tuple[str, ...] = ("ok", "failed", "rate_limited", "cancelled", "timeout")

DEFAULT_WALL_TIMEOUT_S = 2 * 3600.0
DEFAULT_SILENCE_TIMEOUT_S = 20 * 60.0
RESULT_TEXT_LIMIT = 4000
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class AgentRequest:
    """One phase for an agent to do (its task, as the orchestrator sent it), in a
    checkout the worker has prepared, with the limits and the sandbox the worker sets."""

    phase: PhaseTask
    checkout: Path
    log_path: Path
    options: AgentOptions = field(default_factory=AgentOptions)
    wall_timeout_s: float = DEFAULT_WALL_TIMEOUT_S
    silence_timeout_s: float | None = DEFAULT_SILENCE_TIMEOUT_S
    credential_file: Path | None = None
    cancel: threading.Event | Callable[[], bool] | None = None
    # Added to (or overriding) the worker's environment for the agent's process only.
    env: Mapping[str, str] = field(default_factory=dict)
    kill_grace_s: float = 5.0
    # The sandbox every command of the agent runs in (None: as the worker, a trusted
    # host), and the directory it may write beside the checkout (prompt files, HOME).
    wrap: Wrap | None = None
    scratch: Path | None = None
    # The agent session to resume with the phase's feedback (only set where that
    # session lives: the same worker and slot); a backend that cannot resume starts a
    # fresh session told what failed.
    resume_session: str | None = None
    resumed_from: str | None = None  # the checkpoint the checkout was restored from
    conflicts: tuple[Conflict, ...] = ()  # prerequisites merged with markers, to resolve

    @property
    def phase_id(self) -> str:
        return self.phase.phase_id

    def prompt(self, *, resuming: bool = False) -> str:
        """The task's prompt; with `resuming` (the backend resumes `resume_session`),
        only what failed: the session already knows the task."""
        if resuming and self.phase.feedback is not None:
            return build_feedback_prompt(phase_id=self.phase_id, feedback=self.phase.feedback)
        return build_prompt(self.phase, resumed_from=self.resumed_from, conflicts=self.conflicts)


@dataclass(frozen=True)
class AgentResult:
    """How an agent run ended. `ok` means the agent says it finished, nothing more:
    the deliverables, the verify commands and the pushed commit still decide."""

    status: Status
    reason: str
    backend: str
    log_path: Path
    exit_code: int | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False  # from the price table: the CLI reported only tokens
    usage: Mapping[str, int] = field(default_factory=dict)
    num_turns: int | None = None
    session_id: str | None = None
    duration_ms: int | None = None
    permission_denials: tuple[Mapping[str, Any], ...] = ()
    rate_limit_reset: float | None = None  # epoch seconds, when the agent said when
    subtype: str | None = None
    result_text: str | None = None  # the agent's final message, cut to RESULT_TEXT_LIMIT
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the worker's response."""
        data = asdict(self)
        data["log_path"] = str(self.log_path)
        data["usage"] = dict(self.usage)
        data["permission_denials"] = [dict(d) for d in self.permission_denials]
        data["warnings"] = list(self.warnings)
        return data


_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def resuming(request: AgentRequest) -> bool:
    """A session to resume with feedback, whose id is safe as an argument (it came
    from a worker's response, through the agent's output: never trusted to be one)."""
    return (
        request.phase.feedback is not None
        and request.resume_session is not None
        and _SESSION.fullmatch(request.resume_session) is not None
    )


class AgentBackend(Protocol):
    """Runs one agent for one request; never raises for what the agent did."""

    name: str

    def run(self, request: AgentRequest) -> AgentResult: ...


def watchdog_result(
    backend: str, request: AgentRequest, outcome: ProcessOutcome, **fields: Any
) -> AgentResult | None:
    """The result for a run a watchdog or a cancel ended, or that never started; else None."""
    common: dict[str, Any] = {
        "backend": backend, "log_path": request.log_path, "exit_code": outcome.exit_code,
    }  # fmt: skip
    common.update(fields)
    if outcome.start_error is not None:
        return AgentResult(status="failed", reason=outcome.start_error, **common)
    if outcome.cancelled:
        return AgentResult(status="cancelled", reason="cancelled while the agent ran", **common)
    if outcome.timed_out:
        return AgentResult(
            status="timeout",
            reason=f"the agent ran past the wall-clock timeout of {request.wall_timeout_s:g}s",
            **common,
        )
    if outcome.silent:
        return AgentResult(
            status="timeout",
            reason=f"the agent printed nothing for {request.silence_timeout_s:g}s (silence "
            "watchdog)",
            **common,
        )
    return None


def finished_result(
    request: AgentRequest, text: str, warnings: Sequence[str], *, require_marker: bool,
    **common: Any,
) -> AgentResult:  # fmt: skip
    """The result of a run whose agent said its last word as a success: ok with
    `warnings`, unless its final message `text` lacks the phase's completion marker
    (the agent may never have seen the prompt): then failed when the marker is
    required, else one more warning."""
    if completion_marker(request.phase_id) not in text:
        missing = (
            "the agent's final message lacks the completion marker; it may never have "
            "seen the prompt"
        )
        if require_marker:
            return AgentResult(status="failed", reason=missing, warnings=tuple(warnings), **common)
        warnings = [*warnings, missing]
    return AgentResult(
        status="ok", reason="the agent reported success", warnings=tuple(warnings), **common
    )


def excerpt(text: str, limit: int = 300) -> str:
    """The last `limit` characters of `text` on one line, for a reason string."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else "..." + flat[-limit:]


def load_credentials(path: Path) -> dict[str, str]:
    """`NAME=value` lines from a 0600 file (blank lines and `#` comments allowed).

    Refuses a file that others may read or write, and a name that is not an
    environment variable name; values are never part of an error message.
    """
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the credential file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"the credential file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise UsageError(
            f"the credential file {path} is readable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); it must be 0600"
        )
    creds: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.fullmatch(name):
            raise UsageError(f"{path}, line {number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        creds[name] = value
    return creds


def child_environment(
    request: AgentRequest, *, drop: Sequence[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """The agent process's environment and the secret values to mask in its log.

    The worker's environment, less the names in `drop` when a credential file is given
    (so a stray key of the worker's cannot win over the file's), plus the file's
    values, plus the request's `env`.
    """
    env = dict(os.environ)
    secrets: list[str] = []
    if request.credential_file is not None:
        creds = load_credentials(request.credential_file)
        for name in drop:
            env.pop(name, None)
        env.update(creds)
        secrets.extend(creds.values())
    env.update(request.env)
    return env, secrets
