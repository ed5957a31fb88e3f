"""A worker's answer to a phase task, parsed once by the orchestrator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.errors import UsageError
from control.messages.fields import is_number, number, text_or_none


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
    cost_known: bool = False  # the agent said what it cost (else the reservation stands)
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
            reason=text_or_none(message.get("reason") or body.get("reason")),
            commit=text_or_none(body.get("commit")),
            push_ref=text_or_none(body.get("push_ref")),
            summary=summary if isinstance(summary, str) else "",
            cost_usd=number(agent.get("cost_usd")),
            cost_known=is_number(agent.get("cost_usd")),
            rate_limit_reset=float(reset) if isinstance(reset, int | float) and reset else None,
            worker=text_or_none(body.get("worker")),
            extra=body,
        )
