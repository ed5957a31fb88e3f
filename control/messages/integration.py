"""A run's final check as a message: the task a worker merges and verifies, and its
answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from control.errors import UsageError
from control.messages.fields import PAYLOAD_VERSION, fields_of, require_text, text_tuple
from control.messages.refs import integration_key

INTEGRATION_STATUSES: tuple[str, ...] = ("done", "failed", "conflict", "cancelled")


@dataclass(frozen=True)
class IntegrationPhase:
    """One accepted phase to merge: its branch at the commit the orchestrator verified."""

    phase: str
    branch: str
    commit: str


@dataclass(frozen=True)
class IntegrationCheck:
    """One distinct verify command of the final check, and the phases that asked for it;
    a command merged from several (`control.checkset`) keeps them as `parts`, which
    the worker runs alone, when it fails, to say whose checks fail."""

    command: str
    phases: tuple[str, ...]
    parts: tuple[IntegrationCheck, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"command": self.command, "phases": list(self.phases)}
        if self.parts:
            data["parts"] = [p.to_dict() for p in self.parts]
        return data

    @classmethod
    def from_dict(cls, entry: Any, where: str, *, nested: bool = False) -> IntegrationCheck:
        if not isinstance(entry, dict):
            raise UsageError(f"{where} must be an object")
        require_text(entry, "command", where)
        asked = entry.get("phases")
        if not isinstance(asked, list) or not all(isinstance(p, str) for p in asked):
            raise UsageError(f"{where}.phases must be a list of text")
        parts = entry.get("parts", [])
        if not isinstance(parts, list) or (parts and nested):
            raise UsageError(f"{where}.parts must be a list of checks without parts")
        return cls(
            entry["command"],
            tuple(asked),
            tuple(
                cls.from_dict(p, f"{where}.parts[{i}]", nested=True) for i, p in enumerate(parts)
            ),
        )


@dataclass(frozen=True)
class IntegrationTask:
    """The final check of a run, done by a worker like a phase: merge `phases` in this
    order onto `base_branch`, run each of `checks` once on the result, push `branch`.

    The orchestrator never builds or checks the merged tree itself: that would run
    repository content (a conftest.py, a script a phase delivered) on the control plane.
    """

    run_id: str
    attempt: int
    repo_url: str
    base_branch: str
    branch: str
    phases: tuple[IntegrationPhase, ...]
    checks: tuple[IntegrationCheck, ...] = ()
    verify_timeout_s: float = 900.0
    timeout_s: float = 3600.0
    project: str = ""
    # Where the worker pushes the merged tree (its attempt's own ref); the orchestrator,
    # once it has checked it, points `branch` at it: a late attempt never moves the branch.
    push_ref: str = ""

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["phases"] = [asdict(p) for p in self.phases]
        data["checks"] = [c.to_dict() for c in self.checks]
        return {"type": "integration", "version": PAYLOAD_VERSION, **data}

    @classmethod
    def from_payload(cls, payload: Any) -> IntegrationTask:
        """Parse and check a payload; a UsageError names the first field that is wrong."""
        data = fields_of(payload, "integration", cls.__dataclass_fields__, "integration task")
        for name in ("run_id", "repo_url", "base_branch", "branch", "push_ref"):
            require_text(data, name, "integration task")
        if not isinstance(data.get("attempt"), int) or data["attempt"] < 1:
            raise UsageError("integration task field 'attempt' must be a positive integer")
        phases = data.get("phases")
        if not isinstance(phases, list) or not phases:
            raise UsageError("integration task field 'phases' must be a non-empty list")
        parsed = []
        for i, entry in enumerate(phases):
            if not isinstance(entry, dict):
                raise UsageError(f"integration task phases[{i}] must be an object")
            for name in ("phase", "branch", "commit"):
                require_text(entry, name, f"integration task phases[{i}]")
            parsed.append(IntegrationPhase(entry["phase"], entry["branch"], entry["commit"]))
        data["phases"] = tuple(parsed)
        checks = data.get("checks", [])
        if not isinstance(checks, list):
            raise UsageError("integration task field 'checks' must be a list")
        data["checks"] = tuple(
            IntegrationCheck.from_dict(entry, f"integration task checks[{i}]")
            for i, entry in enumerate(checks)
        )
        for name in ("verify_timeout_s", "timeout_s"):
            value = data.get(name, 1.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UsageError(f"integration task field {name!r} must be a positive number")
        return cls(**data)

    @property
    def key(self) -> str:
        """The idempotency key: one final check per run and attempt."""
        return integration_key(self.run_id, self.attempt)


@dataclass(frozen=True)
class CheckResult:
    """How one distinct verify command ended on the integrated tree."""

    command: str
    phases: tuple[str, ...]
    exit_code: int
    output_tail: str
    duration_s: float
    timed_out: bool
    # Set on a command run alone because the merged command holding it failed: the
    # merged command's text (`control.checkset`).
    part_of: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class IntegrationResult:
    """The worker's answer to an `IntegrationTask`.

    `done` means the branch was pushed at `commit` and every check passed; `conflict`
    names the phase and the files; `failed` names the phases whose checks failed
    (`failed_phases`) or, with none, what else went wrong (`reason`).
    """

    status: str
    run_id: str
    attempt: int
    branch: str
    worker: str = ""
    commit: str | None = None
    push_ref: str | None = None
    base_commit: str | None = None
    merged: tuple[str, ...] = ()  # the phases merged, in order
    checks: tuple[CheckResult, ...] = ()
    failed_phases: tuple[str, ...] = ()
    reason: str | None = None
    conflict: Mapping[str, Any] | None = None
    log: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["merged"] = list(self.merged)
        data["failed_phases"] = list(self.failed_phases)
        data["checks"] = [asdict(c) | {"phases": list(c.phases)} for c in self.checks]
        data["conflict"] = None if self.conflict is None else dict(self.conflict)
        return {"type": "integration_result", "version": PAYLOAD_VERSION, **data}

    @classmethod
    def from_dict(cls, payload: Any) -> IntegrationResult:
        """Parse a worker's answer; a UsageError names the first field that is wrong."""
        data = fields_of(
            payload, "integration_result", cls.__dataclass_fields__, "integration result"
        )
        if data.get("status") not in INTEGRATION_STATUSES:
            raise UsageError(
                f"integration result status {data.get('status')!r} is not one of "
                f"{', '.join(INTEGRATION_STATUSES)}"
            )
        for name in ("run_id", "branch"):
            require_text(data, name, "integration result")
        if not isinstance(data.get("attempt"), int):
            raise UsageError("integration result field 'attempt' must be an integer")
        for name in ("merged", "failed_phases"):
            text_tuple(data, name, "integration result")
        checks = data.get("checks", [])
        if not isinstance(checks, list):
            raise UsageError("integration result field 'checks' must be a list")
        try:
            known = CheckResult.__dataclass_fields__
            data["checks"] = tuple(
                CheckResult(
                    **({k: v for k, v in c.items() if k in known}
                       | {"phases": tuple(c.get("phases", ()))})
                )
                for c in checks
            )  # fmt: skip
        except (TypeError, AttributeError) as exc:
            raise UsageError(f"integration result has a malformed check: {exc}") from exc
        if data.get("conflict") is not None and not isinstance(data["conflict"], dict):
            raise UsageError("integration result field 'conflict' must be an object")
        return cls(**data)
