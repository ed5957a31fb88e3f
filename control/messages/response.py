"""A worker's answer to a phase task (or a free-form task): built by the worker, parsed
once by the orchestrator, with this one type.

The worker builds a `PhaseResponse` and writes `to_dict()` into the inbox; the
orchestrator reads the inbox message back with `from_message`, so a field is named in
one place for both sides. The answer carries `version` (PAYLOAD_VERSION); fields this
side does not know are kept in `extra`, never an error. An answer of another version
is not guessed at: it reads as a failed attempt that says to upgrade both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from control.errors import UsageError
from control.messages.fields import PAYLOAD_VERSION, is_number, number, text_or_none
from control.messages.verify import VerifyResult

# The envelope: what the inbox message says of the answer, never part of the body.
_ENVELOPE = ("key", "message_id", "state")
# A field whose name on the wire is another (the rest are written as they are named).
_WIRE_NAMES = {"missing": "deliverables_missing"}


@dataclass(frozen=True)
class PhaseResponse:
    """What a worker answers for one attempt (or free-form task).

    The worker builds it (the envelope left empty) and sends `to_dict()`; the
    orchestrator parses it once from the inbox message with `from_message`, which
    fills the envelope: the message's key, id and state. A message the inbox ended on
    its own (dead after lease expiries, cancelled) has no body: its status is the
    message's state. A field left at its empty value is not written.
    """

    status: str = "failed"  # the worker's verdict (or the message state when it gave none)
    reason: str | None = None
    worker: str | None = None
    slot: str = ""
    # The task it answers, echoed for whoever reads the inbox by hand.
    run_id: str | None = None
    phase: str | None = None
    attempt: int | None = None
    branch: str | None = None
    push_ref: str | None = None
    commit: str | None = None  # pushed at push_ref (status done)
    base_commit: str | None = None
    merged: tuple[Mapping[str, Any], ...] = ()  # the prerequisites merged into the checkout
    log: str | None = None  # the run's log on the worker (`control logs`)
    durations: Mapping[str, float] = field(default_factory=dict)  # seconds per step
    agent: Mapping[str, Any] = field(default_factory=dict)  # the agent's result
    summary: str = ""
    rate_limit_reset: float | None = None
    verify: tuple[VerifyResult, ...] = ()  # every verify command's result, in order
    missing: tuple[str, ...] = ()  # deliverables the attempt did not deliver
    conflict: Mapping[str, Any] | None = None  # the merge that conflicted (status conflict)
    secrets_found: tuple[str, ...] = ()  # files that held a secret (nothing was pushed)
    checkpoint: Mapping[str, Any] | None = None  # the unfinished work pushed aside
    session_kept: str | None = None  # why the agent's session was not kept, when it was not
    resumed_from: Mapping[str, Any] | None = None  # the checkpoint restored: ref, commit
    resume_errors: tuple[str, ...] = ()  # checkpoints offered that could not be restored
    directory: str | None = None  # a free-form task's scratch directory
    version: int = PAYLOAD_VERSION  # an older worker's answer says none: the first
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields this side does not know
    # The envelope, from the inbox message (`from_message`); the worker leaves it empty.
    key: str = ""
    message_id: int = 0
    state: str = ""  # the inbox message's state: done, failed, dead, cancelled

    @property
    def cost_usd(self) -> float:
        return number(self.agent.get("cost_usd"))

    @property
    def cost_known(self) -> bool:
        """The agent said what it cost (else the reservation stands)."""
        return is_number(self.agent.get("cost_usd"))

    @property
    def backend(self) -> str:
        """The agent that ran, and its session (for the next attempt)."""
        return str(self.agent.get("backend") or "")

    @property
    def session_id(self) -> str | None:
        return text_or_none(self.agent.get("session_id"))

    @property
    def failed_checks(self) -> tuple[VerifyResult, ...]:
        return tuple(v for v in self.verify if not v.ok)

    @property
    def lease_lost(self) -> bool:
        """The inbox gave up after its worker vanished mid-run (lease expiries), not
        because the phase failed: a machine loss."""
        return self.state == "dead" and "lease expired" in (self.reason or "")

    def to_dict(self) -> dict[str, Any]:
        """The body the worker writes into the inbox: version, status, reason and commit
        always, every other field when it has a value."""
        body: dict[str, Any] = {
            "version": self.version, "status": self.status,
            "reason": self.reason, "commit": self.commit,
        }  # fmt: skip
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in body or f.name in _ENVELOPE or f.name == "extra" or _empty(value):
                continue
            body[_WIRE_NAMES.get(f.name, f.name)] = _plain(value)
        return {**self.extra, **body}

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> PhaseResponse:
        """Parse an inbox message (key, id, state, reason and the worker's body)."""
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
        reset, attempt = body.get("rate_limit_reset"), body.get("attempt")
        known = {_WIRE_NAMES.get(f.name, f.name) for f in fields(cls)}
        return cls(
            status=str(body.get("status") or state),
            reason=text_or_none(message.get("reason") or body.get("reason")),
            worker=text_or_none(body.get("worker")),
            slot=_text(body.get("slot")),
            run_id=text_or_none(body.get("run_id")),
            phase=text_or_none(body.get("phase")),
            attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
            branch=text_or_none(body.get("branch")),
            push_ref=text_or_none(body.get("push_ref")),
            commit=text_or_none(body.get("commit")),
            base_commit=text_or_none(body.get("base_commit")),
            merged=tuple(m for m in _list(body.get("merged")) if isinstance(m, Mapping)),
            log=text_or_none(body.get("log")),
            durations={k: v for k, v in _mapping(body.get("durations")).items() if is_number(v)},
            agent=_mapping(body.get("agent")),
            summary=_text(body.get("summary")),
            rate_limit_reset=float(reset) if is_number(reset) and reset else None,
            verify=_checks(body.get("verify")),
            missing=_texts(body.get("deliverables_missing")),
            conflict=_mapping(body.get("conflict")) or None,
            secrets_found=_texts(body.get("secrets_found")),
            checkpoint=_mapping(body.get("checkpoint")) or None,
            session_kept=text_or_none(body.get("session_kept")),
            resumed_from=_mapping(body.get("resumed_from")) or None,
            resume_errors=_texts(body.get("resume_errors")),
            directory=text_or_none(body.get("directory")),
            extra={k: v for k, v in body.items() if k not in known},
            key=key,
            message_id=message_id,
            state=str(state),
        )


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | tuple | Mapping) and not value)


def _plain(value: Any) -> Any:
    """A field's value as JSON: tuples as lists, mappings as dicts, checks as objects."""
    if isinstance(value, VerifyResult):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _list(value) if isinstance(v, str))


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _checks(found: Any) -> tuple[VerifyResult, ...]:
    """The verify results a worker reported, each read field by field (agent-made text)."""
    return tuple(
        VerifyResult(
            command=str(v.get("command", "")),
            exit_code=int(v["exit_code"]) if isinstance(v.get("exit_code"), int) else -1,
            output_tail=str(v.get("output_tail") or ""),
            timed_out=bool(v.get("timed_out")),
            duration_s=number(v.get("duration_s")),
        )
        for v in _list(found)
        if isinstance(v, Mapping)
    )
