"""The payloads that travel through a worker's inbox: the contract between the
orchestrator (which writes a `PhaseTask`) and the worker (which answers with a
phase response). Both sides validate with this module, so a field is named once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from control.errors import UsageError

PAYLOAD_VERSION = 1
RESPONSE_STATUSES: tuple[str, ...] = ("done", "failed", "conflict", "rate_limited", "cancelled")


@dataclass(frozen=True)
class PrerequisiteRef:
    """A finished prerequisite: its branch at the exact commit the orchestrator verified."""

    phase: str
    branch: str
    commit: str
    summary: str = ""


@dataclass(frozen=True)
class PhaseTask:
    """Everything a worker needs to do one attempt of one phase."""

    run_id: str
    phase_id: str
    attempt: int
    title: str
    task: str
    branch: str
    repo_url: str
    base_branch: str
    deliverables: tuple[str, ...]
    verify: tuple[str, ...] = ()
    prerequisites: tuple[PrerequisiteRef, ...] = ()
    agent: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 3600.0
    silence_s: float = 1200.0
    verify_timeout_s: float = 900.0
    verify_network: bool = True  # False: the verify commands run with no network at all
    project: str = ""
    # Recorded changes for the replay agent (path -> text), shipped inside the message so
    # the replay works on any worker, over any transport.
    replay_files: Mapping[str, str] = field(default_factory=dict)
    replay_patch: str | None = None

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["prerequisites"] = [asdict(p) for p in self.prerequisites]
        data["deliverables"] = list(self.deliverables)
        data["verify"] = list(self.verify)
        data["agent"] = dict(self.agent)
        data["replay_files"] = dict(self.replay_files)
        return {"type": "phase", "version": PAYLOAD_VERSION, **data}

    @classmethod
    def from_payload(cls, payload: Any) -> PhaseTask:
        """Parse and check a payload; a UsageError names the first field that is wrong."""
        if not isinstance(payload, dict) or payload.get("type") != "phase":
            raise UsageError("payload is not a phase task (expected an object with type 'phase')")
        if payload.get("version") != PAYLOAD_VERSION:
            raise UsageError(
                f"phase task version {payload.get('version')!r} is not {PAYLOAD_VERSION}; "
                "upgrade the worker and the orchestrator together"
            )
        data = {k: v for k, v in payload.items() if k not in ("type", "version")}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"phase task has unknown fields: {', '.join(unknown)}")
        for name in ("run_id", "phase_id", "title", "task", "branch", "repo_url", "base_branch"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise UsageError(f"phase task field {name!r} must be non-empty text")
        if not isinstance(data.get("attempt"), int) or data["attempt"] < 1:
            raise UsageError("phase task field 'attempt' must be a positive integer")
        for name in ("deliverables", "verify"):
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"phase task field {name!r} must be a list of text")
            data[name] = tuple(value)
        prerequisites = data.get("prerequisites", [])
        if not isinstance(prerequisites, list):
            raise UsageError("phase task field 'prerequisites' must be a list")
        try:
            data["prerequisites"] = tuple(PrerequisiteRef(**p) for p in prerequisites)
        except TypeError as exc:
            raise UsageError(f"phase task has a malformed prerequisite: {exc}") from exc
        for name in ("agent", "replay_files"):
            if not isinstance(data.get(name, {}), dict):
                raise UsageError(f"phase task field {name!r} must be an object")
        return cls(**data)

    @property
    def key(self) -> str:
        """The idempotency key of this attempt: sending it twice stores it once."""
        return f"{self.run_id}/{self.phase_id}/{self.attempt}"


def is_phase_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "phase"


def freeform_payload(text: str, *, sender: str = "control") -> dict[str, Any]:
    """A free-form task for one worker (`control enqueue HOST`): text for the agent, no spec."""
    if not text.strip():
        raise UsageError("a free-form task needs some text")
    return {"type": "freeform", "version": PAYLOAD_VERSION, "text": text, "sender": sender}
