"""The payloads that travel through a worker's inbox: the contract between the
orchestrator (which writes a `PhaseTask`) and the worker (which answers with a
phase response). Both sides validate with this module, so a field is named once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from control.errors import UsageError

PAYLOAD_VERSION = 1


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
    # Recorded changes for the replay agent, shipped inside the message so the replay
    # works on any worker, over any transport: files (path -> base64 of their bytes) and
    # a patch (base64), so carriage returns and non-UTF-8 content arrive exactly.
    replay_files_b64: Mapping[str, str] = field(default_factory=dict)
    replay_patch_b64: str | None = None
    # Where this attempt pushes its result: a ref of its own under refs/superagent/, so
    # no attempt (a written-off one that comes back, least of all) can move another's
    # result. The orchestrator copies an accepted commit to `branch` itself.
    push_ref: str | None = None

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["prerequisites"] = [asdict(p) for p in self.prerequisites]
        data["deliverables"] = list(self.deliverables)
        data["verify"] = list(self.verify)
        data["agent"] = dict(self.agent)
        data["replay_files_b64"] = dict(self.replay_files_b64)
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
        known = set(cls.__dataclass_fields__)
        # Unknown fields are tolerated (a newer orchestrator may add some); missing
        # required ones are errors below.
        data = {k: v for k, v in payload.items() if k in known}
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
        for name in ("agent", "replay_files_b64"):
            if not isinstance(data.get(name, {}), dict):
                raise UsageError(f"phase task field {name!r} must be an object")
        push_ref = data.get("push_ref")
        if push_ref is not None and not (
            isinstance(push_ref, str) and push_ref.startswith(ATTEMPT_REF_PREFIX)
        ):
            raise UsageError(f"phase task field 'push_ref' must start with {ATTEMPT_REF_PREFIX}")
        return cls(**data)

    def replay_files(self) -> dict[str, bytes]:
        """The shipped recording's files, decoded; UsageError names a bad entry."""
        return {
            path: _b64(text, f"replay file {path!r}")
            for path, text in self.replay_files_b64.items()
        }

    def replay_patch(self) -> bytes | None:
        if self.replay_patch_b64 is None:
            return None
        return _b64(self.replay_patch_b64, "the replay patch")

    @property
    def key(self) -> str:
        """The idempotency key of this attempt: sending it twice stores it once."""
        return f"{self.run_id}/{self.phase_id}/{self.attempt}"


ATTEMPT_REF_PREFIX = "refs/superagent/attempts/"


def attempt_ref(run_id: str, phase_id: str, attempt: int) -> str:
    """The ref one attempt pushes to (outside refs/heads: no clone fetches it by default)."""
    return f"{ATTEMPT_REF_PREFIX}{run_id}/{phase_id}/{attempt}"


@dataclass(frozen=True)
class PhaseResponse:
    """What a worker answers for one attempt, as the orchestrator reads it.

    Parsed once, from the inbox message (its state and reason) and the worker's
    response object; unknown fields are kept in `extra`, never an error. A message
    the inbox ended on its own (dead after lease expiries, cancelled) has no
    response object: its status is the message's state.
    """

    key: str
    message_id: int
    state: str  # the inbox message's state: done, failed, dead, cancelled
    status: str  # the worker's verdict (or the message state when it gave none)
    reason: str | None = None
    commit: str | None = None
    push_ref: str | None = None
    summary: str = ""
    cost_usd: float = 0.0
    rate_limit_reset: float | None = None
    worker: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lease_lost(self) -> bool:
        """The inbox gave up after its worker vanished mid-run (lease expiries), not
        because the phase failed: a machine loss."""
        return self.state == "dead" and "lease expired" in (self.reason or "")

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> PhaseResponse:
        key, message_id, state = message.get("key"), message.get("id"), message.get("state")
        if not isinstance(key, str) or not isinstance(message_id, int) or not state:
            raise UsageError("a response needs a key, an id and a state")
        body = message.get("response")
        body = dict(body) if isinstance(body, Mapping) else {}
        agent = body.get("agent")
        agent = agent if isinstance(agent, Mapping) else {}
        reset = body.get("rate_limit_reset")
        summary = body.get("summary")
        return cls(
            key=key,
            message_id=message_id,
            state=str(state),
            status=str(body.get("status") or state),
            reason=_text_or_none(message.get("reason") or body.get("reason")),
            commit=_text_or_none(body.get("commit")),
            push_ref=_text_or_none(body.get("push_ref")),
            summary=summary if isinstance(summary, str) else "",
            cost_usd=_number(agent.get("cost_usd")),
            rate_limit_reset=float(reset) if isinstance(reset, int | float) and reset else None,
            worker=_text_or_none(body.get("worker")),
            extra=body,
        )


def to_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"{what} is not base64: {exc}") from exc


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def is_phase_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "phase"


def freeform_payload(text: str, *, sender: str = "control") -> dict[str, Any]:
    """A free-form task for one worker (`control enqueue HOST`): text for the agent, no spec."""
    if not text.strip():
        raise UsageError("a free-form task needs some text")
    return {"type": "freeform", "version": PAYLOAD_VERSION, "text": text, "sender": sender}
