"""The spec as the rest of superagent sees it: validated, with every default applied.

`Spec` is only ever built by the rules checker from a document without errors; a
`Report` carries what `validate` found, errors and warnings each with its JSON path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from control.dag import Dag
from control.errors import SuperagentError, UsageError
from control.messages.agent import AgentOptions

Severity = Literal["error", "warning"]

DEFAULT_BASE_BRANCH = "main"
DEFAULT_BRANCH_PREFIX = "superagent"
DEFAULT_ESTIMATE_MINUTES = 30.0
DEFAULT_TIMEOUT_MINUTES = 120.0
DEFAULT_SILENCE_MINUTES = 15.0
# An agent attempt is expensive; one retry covers a machine lost mid-phase.
DEFAULT_MAX_ATTEMPTS = 2
# Failed attempts sent back to the agent with what failed before a fresh start.
DEFAULT_FEEDBACK_ROUNDS = 2
# How often a worker snapshots an agent's work in progress (and pushes it aside).
DEFAULT_CHECKPOINT_MINUTES = 5.0
# A task shorter than this many words leaves the agent guessing.
MIN_TASK_WORDS = 6


class InvalidSpecError(SuperagentError):
    """The spec breaks the contract; `control validate` lists every problem."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a spec, where it is, and how bad."""

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "path": self.path, "message": self.message}


@dataclass(frozen=True)
class Repo:
    url: str
    base_branch: str = DEFAULT_BASE_BRANCH
    branch_prefix: str = DEFAULT_BRANCH_PREFIX


@dataclass(frozen=True)
class Phase:
    """One phase with every default applied and its task text read from its file."""

    id: str
    title: str
    task: str
    deliverables: tuple[str, ...]
    branch: str
    verify: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    worker: str | None = None
    task_file: str | None = None
    estimate_minutes: float = DEFAULT_ESTIMATE_MINUTES
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
    silence_minutes: float = DEFAULT_SILENCE_MINUTES
    verify_network: bool = True  # False: verify commands run with no network
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    feedback_rounds: int = DEFAULT_FEEDBACK_ROUNDS
    checkpoint_minutes: float = DEFAULT_CHECKPOINT_MINUTES
    agent: AgentOptions = field(default_factory=AgentOptions)
    # The cap of one attempt: reserved from the run's budget before dispatch, and the
    # agent's own limit (its `budget_usd`, else the defaults', else the agent's max_budget_usd).
    budget_usd: float | None = None
    estimate_usd: float | None = None  # one attempt's expected cost, for `control plan`


@dataclass(frozen=True)
class Spec:
    """A validated spec: the only form of a spec the rest of superagent accepts."""

    name: str
    repo: Repo
    phases: tuple[Phase, ...]
    description: str = ""
    path: Path | None = None
    # A phase whose prerequisites conflict gets them merged with the conflict markers,
    # for its agent to resolve (verified like any phase); False: it fails `conflict`.
    resolve_conflicts: bool = True
    # Merged states verified on a worker, the phase that breaks one found and sent back
    # with the failure (control.merge_queue); False: a failing integration ends the run.
    merge_queue: bool = True
    budget_usd: float | None = None  # the whole run's cap (control.budget)
    burn_rate_usd_per_hour: float | None = None  # spend per hour that pauses dispatching

    @cached_property
    def by_id(self) -> dict[str, Phase]:
        return {p.id: p for p in self.phases}

    def phase(self, phase_id: str) -> Phase:
        try:
            return self.by_id[phase_id]
        except KeyError:
            raise UsageError(f"spec {self.name!r} has no phase {phase_id!r}") from None

    def dag(self) -> Dag:
        return Dag(
            {p.id: p.depends_on for p in self.phases},
            {p.id: p.estimate_minutes for p in self.phases},
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = None if self.path is None else str(self.path)
        return data


@dataclass
class Report:
    """What `validate` found: errors, warnings, and the spec itself when there is no error."""

    issues: list[Issue]
    spec: Spec | None = None
    inventory_checked: bool = False

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    def ok(self, strict: bool = False) -> bool:
        return not self.errors and not (strict and self.warnings)

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "valid": self.ok(strict),
            "strict": strict,
            "errors": [i.to_dict() for i in self.errors],
            "warnings": [i.to_dict() for i in self.warnings],
            "inventory_checked": self.inventory_checked,
            "phases": 0 if self.spec is None else len(self.spec.phases),
        }
