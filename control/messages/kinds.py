"""Which kind of task a payload is, and the free-form task (`control enqueue HOST`)."""

from __future__ import annotations

from typing import Any

from control.errors import UsageError
from control.messages.fields import PAYLOAD_VERSION


def is_integration_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "integration"


def is_phase_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "phase"


def freeform_payload(text: str, *, sender: str = "control") -> dict[str, Any]:
    """A free-form task for one worker (`control enqueue HOST`): text for the agent, no spec."""
    if not text.strip():
        raise UsageError("a free-form task needs some text")
    return {"type": "freeform", "version": PAYLOAD_VERSION, "text": text, "sender": sender}
