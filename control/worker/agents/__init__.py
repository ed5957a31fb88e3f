"""The agent backends a worker can run a phase with, by name.

`get_backend("claude-code")` gives the backend; `run_agent` rotates the logs
directory, then runs it. Every backend takes an `AgentRequest` and returns an
`AgentResult` (see `base`); `request_for_task` builds the request from the phase task
a worker claimed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from control.errors import UsageError
from control.messages import AgentOptions, PhaseTask
from control.worker.agents.base import (
    STATUSES,
    AgentBackend,
    AgentRequest,
    AgentResult,
    load_credentials,
)
from control.worker.agents.claude_code import ClaudeCodeBackend
from control.worker.agents.codex import CODEX
from control.worker.agents.command import CommandBackend
from control.worker.agents.gemini import GEMINI
from control.worker.agents.headless import CliBackend
from control.worker.agents.opencode import OPENCODE
from control.worker.agents.replay import ReplayBackend
from control.worker.logs import DEFAULT_KEEP, rotate_logs

_BACKENDS: dict[str, Callable[[], AgentBackend]] = {
    ClaudeCodeBackend.name: ClaudeCodeBackend,
    CommandBackend.name: CommandBackend,
    ReplayBackend.name: ReplayBackend,
    # The JSON-streaming CLIs: one backend, told which CLI (its argv, its reader).
    **{cli.name: functools.partial(CliBackend, cli) for cli in (CODEX, GEMINI, OPENCODE)},
}

__all__ = [
    "STATUSES",
    "AgentBackend",
    "AgentOptions",
    "AgentRequest",
    "AgentResult",
    "backend_names",
    "get_backend",
    "load_credentials",
    "request_for_task",
    "run_agent",
]


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> AgentBackend:
    """The backend called `name`, or UsageError listing the known ones."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise UsageError(
            f"unknown agent backend {name!r}; known: {', '.join(backend_names())}"
        ) from None
    return factory()


def run_agent(name: str, request: AgentRequest, *, keep_logs: int = DEFAULT_KEEP) -> AgentResult:
    """Rotate the logs directory (keeping this run's log), then run backend `name`."""
    backend = get_backend(name)
    rotate_logs(request.log_path.parent, keep_logs, protect=request.log_path)
    return backend.run(request)


def request_for_task(
    task: PhaseTask,
    *,
    checkout: Path,
    log_path: Path,
    credential_file: Path | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, AgentRequest]:
    """The backend name and the request for one claimed phase task.

    The task's `agent` object gives the backend (claude-code when absent) and its
    options; a replay recording shipped in the task goes to the replay backend.
    """
    agent = {k: v for k, v in task.agent.items() if v is not None}
    agent.pop("account", None)  # its credential file is the request's, chosen by the worker
    if task.replay_files_b64:
        agent.setdefault("replay_files", task.replay_files())
    replay_patch = task.replay_patch()
    if replay_patch:
        agent.setdefault("replay_patch", replay_patch)
    options = AgentOptions.from_dict(agent)
    request = AgentRequest(
        phase=task,
        checkout=checkout,
        log_path=log_path,
        options=options,
        wall_timeout_s=task.timeout_s,
        silence_timeout_s=task.silence_s,
        credential_file=credential_file,
        cancel=cancel,
        env=dict(env or {}),
    )
    return options.backend, request
