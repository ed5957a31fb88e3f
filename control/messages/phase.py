"""The task of one attempt of one phase, as the orchestrator writes it and the worker
reads it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from control.errors import UsageError
from control.messages.feedback import Feedback
from control.messages.fields import (
    PAYLOAD_VERSION,
    fields_of,
    from_b64,
    require_text,
    text_tuple,
)
from control.messages.refs import ATTEMPT_REF_PREFIX, WIP_REF_PREFIX


@dataclass(frozen=True)
class PrerequisiteRef:
    """A finished prerequisite: its branch at the exact commit the orchestrator verified."""

    phase: str
    branch: str
    commit: str
    summary: str = ""
    task: str = ""  # its task, for an agent that must resolve a conflict with it


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
    # Recorded changes for the replay agent, shipped inside the message so the replay
    # works on any worker, over any transport: files (path -> base64 of their bytes) and
    # a patch (base64), so carriage returns and non-UTF-8 content arrive exactly.
    replay_files_b64: Mapping[str, str] = field(default_factory=dict)
    replay_patch_b64: str | None = None
    # Where this attempt pushes its result: a ref of its own under refs/superagent/, so
    # no attempt (a written-off one that comes back, least of all) can move another's
    # result. The orchestrator copies an accepted commit to `branch` itself.
    push_ref: str | None = None
    # What failed in the attempt before this one (see `Feedback`): the agent is told,
    # and resumes its session where it can, instead of starting blind.
    feedback: Feedback | None = None
    # Checkpoints this attempt may start from (refs under refs/superagent/wip/, newest
    # first): the work in progress of the attempts it replaces. The first that exists
    # and applies is restored; none is ever a result (this attempt verifies and commits).
    resume_refs: tuple[str, ...] = ()
    # Where this attempt pushes its own checkpoints, and how often while the agent works.
    checkpoint_ref: str | None = None
    checkpoint_interval_s: float = 300.0
    # A prerequisite that conflicts is merged with its conflict markers for the agent to
    # resolve first (False: the attempt ends `conflict`, the agent never runs).
    resolve_conflicts: bool = False

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["feedback"] = None if self.feedback is None else self.feedback.to_dict()
        data["resume_refs"] = list(self.resume_refs)
        data["prerequisites"] = [asdict(p) for p in self.prerequisites]
        data["deliverables"] = list(self.deliverables)
        data["verify"] = list(self.verify)
        data["agent"] = dict(self.agent)
        data["replay_files_b64"] = dict(self.replay_files_b64)
        return {"type": "phase", "version": PAYLOAD_VERSION, **data}

    @classmethod
    def from_payload(cls, payload: Any) -> PhaseTask:
        """Parse and check a payload; a UsageError names the first field that is wrong."""
        data = fields_of(payload, "phase", cls.__dataclass_fields__, "phase task")
        # Unknown fields are tolerated (a newer orchestrator may add some); missing
        # required ones are errors below.
        for name in ("run_id", "phase_id", "title", "task", "branch", "repo_url", "base_branch"):
            require_text(data, name, "phase task")
        if not isinstance(data.get("attempt"), int) or data["attempt"] < 1:
            raise UsageError("phase task field 'attempt' must be a positive integer")
        for name in ("deliverables", "verify"):
            text_tuple(data, name, "phase task")
        prerequisites = data.get("prerequisites", [])
        if not isinstance(prerequisites, list):
            raise UsageError("phase task field 'prerequisites' must be a list")
        try:
            data["prerequisites"] = tuple(PrerequisiteRef(**p) for p in prerequisites)
        except TypeError as exc:
            raise UsageError(f"phase task has a malformed prerequisite: {exc}") from exc
        for name in ("agent", "replay_files_b64"):
            if not isinstance(data.get(name, {}), dict):
                raise UsageError(f"phase task field {name!r} must be an object")
        push_ref = data.get("push_ref")
        if push_ref is not None and not (
            isinstance(push_ref, str) and push_ref.startswith(ATTEMPT_REF_PREFIX)
        ):
            raise UsageError(f"phase task field 'push_ref' must start with {ATTEMPT_REF_PREFIX}")
        _continuation_fields(data)
        return cls(**data)

    def replay_files(self) -> dict[str, bytes]:
        """The shipped recording's files, decoded; UsageError names a bad entry."""
        return {
            path: from_b64(text, f"replay file {path!r}")
            for path, text in self.replay_files_b64.items()
        }

    def replay_patch(self) -> bytes | None:
        if self.replay_patch_b64 is None:
            return None
        return from_b64(self.replay_patch_b64, "the replay patch")

    @property
    def key(self) -> str:
        """The idempotency key of this attempt: sending it twice stores it once."""
        return f"{self.run_id}/{self.phase_id}/{self.attempt}"


def _continuation_fields(data: dict[str, Any]) -> None:
    """Check and convert, in place, what a phase task says about earlier attempts."""
    refs = data.get("resume_refs", [])
    if not isinstance(refs, list) or not all(
        isinstance(r, str) and r.startswith(WIP_REF_PREFIX) for r in refs
    ):
        raise UsageError(f"phase task field 'resume_refs' must be refs under {WIP_REF_PREFIX}")
    data["resume_refs"] = tuple(refs)
    checkpoint_ref = data.get("checkpoint_ref")
    if checkpoint_ref is not None and not (
        isinstance(checkpoint_ref, str) and checkpoint_ref.startswith(WIP_REF_PREFIX)
    ):
        raise UsageError(f"phase task field 'checkpoint_ref' must start with {WIP_REF_PREFIX}")
    interval = data.get("checkpoint_interval_s", 300.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise UsageError("phase task field 'checkpoint_interval_s' must be a positive number")
    if data.get("feedback") is not None:
        data["feedback"] = Feedback.from_dict(data["feedback"])
    if not isinstance(data.get("resolve_conflicts", False), bool):
        raise UsageError("phase task field 'resolve_conflicts' must be true or false")
