"""How the agent runs for one phase: the one definition of its options, which the spec
builds (defaults merged with the phase's own), the task carries as its `agent` object
and the worker's backends read.

The spec's schema checks what a person wrote; `from_dict` checks what arrives in a
task, for the worker runs it: an option that could pass as a flag is refused there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from control.errors import UsageError

DEFAULT_BACKEND = "claude-code"
# The schema's enum and the worker's backends; a test keeps the three the same.
AGENT_BACKENDS: tuple[str, ...] = (
    "claude-code",
    "codex",
    "command",
    "gemini",
    "opencode",
    "replay",
)
# Claude Code's `--permission-mode` choices; the schema's enum is the same (a test).
PERMISSION_MODES: tuple[str, ...] = (
    "acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan",
)  # fmt: skip
# The options a task's `agent` object carries as fields; any other key is `extra`.
_ARGV_FIELDS = ("command", "resume_command")


@dataclass(frozen=True)
class AgentOptions:
    """The agent of one phase and its settings. Backends ignore what they cannot use.

    `command`, `resume_command` and `session_pattern` are the command backend's
    template; `fallback` (backend, model) the agents that take over when every account
    of this one is held (the orchestrator's concern: never sent). `extra` carries
    backend-specific settings the spec does not name: the replay backend's recording,
    Claude Code's executable and output format, a test's exit grace.
    """

    backend: str = DEFAULT_BACKEND
    command: tuple[str, ...] = ()
    model: str | None = None
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None
    resume_command: tuple[str, ...] = ()
    session_pattern: str | None = None
    fallback: tuple[tuple[str, str | None], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _ARGV_FIELDS:  # an argv, never a string that reads as one
            argv = getattr(self, name)
            if isinstance(argv, list):
                object.__setattr__(self, name, argv := tuple(argv))
            if not isinstance(argv, tuple) or not all(isinstance(part, str) for part in argv):
                raise UsageError(
                    f"the agent's {name} must be a JSON list of strings (an argv template "
                    'such as ["codex", "exec", "--cd", "{checkout}", "-"])'
                )

    def chain(self) -> tuple[tuple[str, str | None], ...]:
        """The phase's agent and model, then its fallbacks, in order."""
        return ((self.backend, self.model), *self.fallback)

    def to_dict(self) -> dict[str, Any]:
        """The task's `agent` object: every option but the fallbacks, then `extra`."""
        data: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("fallback", "extra")
        }
        for name in (*_ARGV_FIELDS, "allowed_tools"):
            data[name] = list(data[name])
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AgentOptions:
        """Options from a task's `agent` object, checked; unknown keys go to `extra`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)} - {"fallback", "extra"}
        values = {name: data.pop(name) for name in known if name in data}
        values["backend"] = str(values.get("backend") or DEFAULT_BACKEND)
        tools = values.get("allowed_tools") or ()
        if isinstance(tools, str):
            raise UsageError("allowed_tools must be a list of tool names, not a string")
        values["allowed_tools"] = tuple(tools)
        for name in _ARGV_FIELDS:
            values[name] = values.get(name) or ()
        pattern = values.get("session_pattern")
        if pattern is not None and not isinstance(pattern, str):
            raise UsageError(f"session_pattern must be text, not {pattern!r}")
        options = cls(**values, extra=data)
        options.check()
        return options

    def check(self) -> None:
        """Refuse an option the worker must not pass on: one that could read as a flag,
        an unknown permission mode, a limit that is not one."""
        if self.model is not None and (not self.model.strip() or self.model.startswith("-")):
            raise UsageError(f"invalid model name {self.model!r}")
        for tool in self.allowed_tools:
            if not tool.strip() or tool.startswith("-"):
                raise UsageError(f"invalid allowed tool {tool!r}")
        if self.permission_mode is not None and self.permission_mode not in PERMISSION_MODES:
            raise UsageError(
                f"unknown permission mode {self.permission_mode!r}; "
                f"expected one of {', '.join(PERMISSION_MODES)}"
            )
        if self.max_turns is not None and (
            isinstance(self.max_turns, bool) or int(self.max_turns) != self.max_turns
            or self.max_turns < 1
        ):  # fmt: skip
            raise UsageError(f"max_turns must be a positive integer, not {self.max_turns!r}")
        if self.max_budget_usd is not None and not self.max_budget_usd > 0:
            raise UsageError(f"max_budget_usd must be positive, not {self.max_budget_usd!r}")
