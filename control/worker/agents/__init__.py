"""The agent backends a worker can run a phase with, by name.

`get_backend("claude-code")` gives the backend; `run_agent` rotates the logs
directory, then runs it. Every backend takes an `AgentRequest` and returns an
`AgentResult` (see `base`).
"""

from __future__ import annotations

from collections.abc import Callable

from control.errors import UsageError
from control.worker.agents.base import (
    STATUSES,
    AgentBackend,
    AgentOptions,
    AgentRequest,
    AgentResult,
    load_credentials,
)
from control.worker.agents.claude_code import ClaudeCodeBackend
from control.worker.agents.command import CommandBackend
from control.worker.agents.replay import ReplayBackend
from control.worker.logs import DEFAULT_KEEP, rotate_logs
from control.worker.prompt import Prerequisite

_BACKENDS: dict[str, Callable[[], AgentBackend]] = {
    ClaudeCodeBackend.name: ClaudeCodeBackend,
    CommandBackend.name: CommandBackend,
    ReplayBackend.name: ReplayBackend,
}

__all__ = [
    "STATUSES",
    "AgentBackend",
    "AgentOptions",
    "AgentRequest",
    "AgentResult",
    "Prerequisite",
    "backend_names",
    "get_backend",
    "load_credentials",
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
