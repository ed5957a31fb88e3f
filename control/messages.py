"""The payloads that travel through a worker's inbox: the contract between the
orchestrator (which writes a `PhaseTask` or an `IntegrationTask`) and the worker
(which answers with a phase response or an `IntegrationResult`). Both sides
validate with this module, so a field is named once.
"""

from __future__ import annotations

import base64
import binascii
import math
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
    task: str = ""  # its task, for an agent that must resolve a conflict with it


@dataclass(frozen=True)
class VerifyFailure:
    """One verify command that failed, as the agent is shown it (output is the tail)."""

    command: str
    exit_code: int
    output_tail: str = ""
    timed_out: bool = False


@dataclass(frozen=True)
class Feedback:
    """What failed in an earlier attempt of a phase, for the attempt after it.

    Everything here but `attempt` came from a worker and, through the output of the
    verify commands, from the agent: it reaches the next agent only as framed data
    (`control.worker.prompt`), never a command line. `session_id` is resumed only on
    the worker and slot that ran it (where the agent's session is), when the backend can.
    """

    attempt: int
    reason: str
    worker: str = ""
    slot: str = ""
    backend: str = ""
    session_id: str | None = None
    # The account the session ran on: its Claude Code configuration (and so the session)
    # is that account's, so only an attempt on the same account resumes it.
    account: str | None = None
    verify: tuple[VerifyFailure, ...] = ()
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verify"] = [asdict(v) for v in self.verify]
        data["missing"] = list(self.missing)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Feedback:
        """Parse; a UsageError names the first field that is wrong."""
        if not isinstance(data, dict):
            raise UsageError("phase task field 'feedback' must be an object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if not isinstance(known.get("attempt"), int) or isinstance(known["attempt"], bool):
            raise UsageError("feedback field 'attempt' must be an integer")
        for name in ("reason", "worker", "slot", "backend"):
            if not isinstance(known.get(name, ""), str):
                raise UsageError(f"feedback field {name!r} must be text")
        for name in ("session_id", "account"):
            if known.get(name) is not None and not isinstance(known[name], str):
                raise UsageError(f"feedback field {name!r} must be text")
        missing = known.get("missing", [])
        if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
            raise UsageError("feedback field 'missing' must be a list of text")
        known["missing"] = tuple(missing)
        verify = known.get("verify", [])
        if not isinstance(verify, list):
            raise UsageError("feedback field 'verify' must be a list")
        try:
            known["verify"] = tuple(
                VerifyFailure(
                    command=str(v["command"]),
                    exit_code=int(v["exit_code"]),
                    output_tail=str(v.get("output_tail") or ""),
                    timed_out=bool(v.get("timed_out", False)),
                )
                for v in verify
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise UsageError(f"feedback has a malformed verify entry: {exc}") from exc
        return cls(**known)


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
        _continuation_fields(data)
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


ATTEMPT_REF_PREFIX = "refs/superagent/attempts/"


def attempt_ref(run_id: str, phase_id: str, attempt: int) -> str:
    """The ref one attempt pushes to (outside refs/heads: no clone fetches it by default)."""
    return f"{ATTEMPT_REF_PREFIX}{run_id}/{phase_id}/{attempt}"


# Work in progress: apart from results, so nothing that reads attempts or branches
# takes a checkpoint for one; only the worker writes here, never the agent.
WIP_REF_PREFIX = "refs/superagent/wip/"


def wip_ref(run_id: str, phase_id: str, attempt: int) -> str:
    """The ref one attempt's checkpoints go to (the last one wins)."""
    return f"{WIP_REF_PREFIX}{run_id}/{phase_id}/{attempt}"


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
            reason=_text_or_none(message.get("reason") or body.get("reason")),
            commit=_text_or_none(body.get("commit")),
            push_ref=_text_or_none(body.get("push_ref")),
            summary=summary if isinstance(summary, str) else "",
            cost_usd=_number(agent.get("cost_usd")),
            cost_known=_is_number(agent.get("cost_usd")),
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


def _is_number(value: Any) -> bool:
    """A cost a worker may report: a finite number, not negative (that would refund)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value) and value >= 0
    )  # fmt: skip


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else 0.0


INTEGRATION_KEY_PREFIX = "integration/"
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
        _text(entry, "command", where)
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
        data = _fields_of(payload, "integration", cls.__dataclass_fields__)
        for name in ("run_id", "repo_url", "base_branch", "branch", "push_ref"):
            _text(data, name, "integration task")
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
                _text(entry, name, f"integration task phases[{i}]")
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


def integration_key(run_id: str, attempt: int) -> str:
    return f"{INTEGRATION_KEY_PREFIX}{run_id}/{attempt}"


def integration_ref(run_id: str, attempt: int) -> str:
    """The ref one attempt of the final check pushes to ('_' never starts a phase id)."""
    return f"{ATTEMPT_REF_PREFIX}{run_id}/_integration/{attempt}"


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
        data = _fields_of(payload, "integration_result", cls.__dataclass_fields__)
        if data.get("status") not in INTEGRATION_STATUSES:
            raise UsageError(
                f"integration result status {data.get('status')!r} is not one of "
                f"{', '.join(INTEGRATION_STATUSES)}"
            )
        for name in ("run_id", "branch"):
            _text(data, name, "integration result")
        if not isinstance(data.get("attempt"), int):
            raise UsageError("integration result field 'attempt' must be an integer")
        for name in ("merged", "failed_phases"):
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"integration result field {name!r} must be a list of text")
            data[name] = tuple(value)
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


def _fields_of(payload: Any, kind: str, known: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a typed payload of `kind`, unknown ones dropped (a newer sender's)."""
    if not isinstance(payload, dict) or payload.get("type") != kind:
        raise UsageError(f"payload is not an {kind} (expected an object with type {kind!r})")
    if payload.get("version") != PAYLOAD_VERSION:
        raise UsageError(
            f"{kind} version {payload.get('version')!r} is not {PAYLOAD_VERSION}; "
            "upgrade the worker and the orchestrator together"
        )
    return {k: v for k, v in payload.items() if k in known}


def _text(data: Mapping[str, Any], name: str, what: str) -> None:
    if not isinstance(data.get(name), str) or not data[name]:
        raise UsageError(f"{what} field {name!r} must be non-empty text")


def is_integration_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "integration"


def is_phase_payload(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("type") == "phase"


def freeform_payload(text: str, *, sender: str = "control") -> dict[str, Any]:
    """A free-form task for one worker (`control enqueue HOST`): text for the agent, no spec."""
    if not text.strip():
        raise UsageError("a free-form task needs some text")
    return {"type": "freeform", "version": PAYLOAD_VERSION, "text": text, "sender": sender}
