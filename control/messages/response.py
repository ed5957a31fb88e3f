"""A worker's answer to a phase task, parsed once by the orchestrator.

The worker writes it as an object with `version` (PAYLOAD_VERSION); fields this
side does not know are kept in `extra`, never an error. An answer of another version
is not guessed at: it reads as a failed attempt that says to upgrade both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.errors import UsageError
from control.messages.feedback import VerifyFailure
from control.messages.fields import PAYLOAD_VERSION, is_number, number, text_or_none


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
    slot: str = ""
    backend: str = ""  # the agent that ran, and its session (for the next attempt)
    session_id: str | None = None
    verify: tuple[VerifyFailure, ...] = ()  # every verify command's result, in order
    missing: tuple[str, ...] = ()  # deliverables the attempt did not deliver
    version: int = PAYLOAD_VERSION  # an older worker's answer says none: the first
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed_checks(self) -> tuple[VerifyFailure, ...]:
        return tuple(v for v in self.verify if v.exit_code != 0 or v.timed_out)

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
        version = body.get("version", PAYLOAD_VERSION)
        if version != PAYLOAD_VERSION:
            return cls(
                key=key, message_id=message_id, state=str(state), status="failed",
                reason=f"response version {version!r} is not {PAYLOAD_VERSION}; upgrade the "
                "worker and the orchestrator together",
                version=version if isinstance(version, int) else -1, extra=body,
            )  # fmt: skip
        agent = body.get("agent")
        agent = agent if isinstance(agent, Mapping) else {}
        reset = body.get("rate_limit_reset")
        summary = body.get("summary")
        missing = body.get("deliverables_missing")
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
            slot=str(body.get("slot") or ""),
            backend=str(agent.get("backend") or ""),
            session_id=text_or_none(agent.get("session_id")),
            verify=_checks(body.get("verify")),
            missing=tuple(m for m in missing if isinstance(m, str))
            if isinstance(missing, list)
            else (),
            extra=body,
        )


def _checks(found: Any) -> tuple[VerifyFailure, ...]:
    """The verify results a worker reported, each read field by field (agent-made text)."""
    return tuple(
        VerifyFailure(
            command=str(v.get("command", "")),
            exit_code=int(v["exit_code"]) if isinstance(v.get("exit_code"), int) else -1,
            output_tail=str(v.get("output_tail") or ""),
            timed_out=bool(v.get("timed_out")),
        )
        for v in (found if isinstance(found, list) else [])
        if isinstance(v, Mapping)
    )
