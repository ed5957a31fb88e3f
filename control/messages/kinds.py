"""Which kind of task a payload is, and the free-form task (`control enqueue HOST`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.errors import UsageError
from control.messages.fields import PAYLOAD_VERSION, fields_of


def is_integration_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "integration"


def is_phase_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "phase"


def is_freeform_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "freeform"


@dataclass(frozen=True)
class FreeformTask:
    """A free-form task for one worker (`control enqueue HOST`): text for the agent, no
    spec, no repository; `agent` is the task's agent object (its backend)."""

    text: str
    sender: str = "control"
    agent: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise UsageError("a free-form task needs some text")

    def to_payload(self) -> dict[str, Any]:
        return {
            "type": "freeform", "version": PAYLOAD_VERSION,
            "text": self.text, "sender": self.sender, "agent": dict(self.agent),
        }  # fmt: skip

    @classmethod
    def from_payload(cls, payload: Any) -> FreeformTask:
        """Parse and check a payload; unknown fields are tolerated, a UsageError names
        what is wrong."""
        data = fields_of(payload, "freeform", cls.__dataclass_fields__, "free-form task")
        text, agent = data.get("text"), data.get("agent") or {}
        if not isinstance(text, str) or not isinstance(agent, dict):
            raise UsageError("a free-form task needs text (and an agent object)")
        sender = data.get("sender")
        return cls(text, sender if isinstance(sender, str) else "control", agent)
