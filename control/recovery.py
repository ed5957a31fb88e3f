"""What the next attempt of a phase continues from, instead of starting over.

Agent time is the expensive resource: an attempt after a failed one is told what
failed (`Feedback`: the reason, the verify commands with their output's tail, the
deliverables missing) and resumes the agent's session where it can; an attempt after
a machine loss starts from the checkpoint its predecessor pushed. Pure: it reads the
attempts the state database holds and decides, so the same attempt always gets the
same task (a resend after a crash is the same message).

Feedback rounds are bounded per phase (`feedback_rounds`) and counted apart from
machine losses: once a phase has failed more often than that, the next attempt starts
fresh, from the base, with nothing of the failed work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control.messages import Feedback, VerifyFailure, wip_ref
from control.state import AttemptRow, ReopenRow

OUTPUT_TAIL_LIMIT = 2000  # characters of one failed command's output shown to the agent
COMMANDS_LIMIT = 5  # failed verify commands shown
MISSING_LIMIT = 20  # missing deliverables shown
RESUME_DEPTH = 3  # checkpoints offered, newest first


@dataclass(frozen=True)
class Continuation:
    """What one attempt starts from: feedback on the failure before it (None: nothing
    failed, or the rounds are used up) and the checkpoints it may restore."""

    feedback: Feedback | None
    resume_refs: tuple[str, ...]


def continuation(
    attempts: Sequence[AttemptRow],
    attempt: int,
    feedback_rounds: int,
    reopens: Sequence[ReopenRow] = (),
) -> Continuation:
    """The continuation of attempt `attempt` of a phase, from that phase's earlier attempts
    and the times the merge queue reopened it (`control.merge_queue`): an attempt right
    after a reopen is shown why, and starts from the base (its accepted work is the
    branch the integration refused)."""
    earlier = sorted(
        (a for a in attempts if a.attempt < attempt and a.state not in ("sending", "dispatched")),
        key=lambda a: a.attempt,
    )
    failures = 0
    candidates: list[str] = []
    last_failed: AttemptRow | None = None
    for row in earlier:
        candidates.append(wip_ref(row.run_id, row.phase_id, row.attempt))
        if _failed(row):
            failures += 1
            last_failed = row
            if failures > feedback_rounds:
                candidates = []  # this failure's work is not continued: a fresh start
                last_failed = None
    latest = max((a.attempt for a in earlier), default=0)
    reopened = [r for r in reopens if r.after_attempt == latest and latest > 0]
    if reopened:
        return Continuation(Feedback.from_dict(reopened[-1].feedback), ())
    feedback = None
    if last_failed is not None:
        resumable = earlier[-1] is last_failed  # a loss since: that session is not the latest
        feedback = feedback_of(last_failed, with_session=resumable)
    return Continuation(feedback, tuple(reversed(candidates))[:RESUME_DEPTH])


def _failed(row: AttemptRow) -> bool:
    """A failure of the phase's own (not a machine loss, a cancel or a rate limit)."""
    return row.state == "failed" and _body(row).get("status") == "failed"


def _body(row: AttemptRow) -> Mapping[str, Any]:
    message = row.response if isinstance(row.response, Mapping) else {}
    body = message.get("response")
    return body if isinstance(body, Mapping) else {}


def feedback_of(row: AttemptRow, *, with_session: bool = True) -> Feedback:
    """The feedback a failed attempt gives the next one, cut to size."""
    body = _body(row)
    message = row.response if isinstance(row.response, Mapping) else {}
    reason = str(body.get("reason") or message.get("reason") or row.reason or "it failed")
    failed = [
        v
        for v in body.get("verify") or []
        if isinstance(v, Mapping) and (v.get("exit_code") != 0 or v.get("timed_out"))
    ]
    verify = tuple(
        VerifyFailure(
            command=str(v.get("command", "")),
            exit_code=int(v["exit_code"]) if isinstance(v.get("exit_code"), int) else -1,
            output_tail=str(v.get("output_tail") or "")[-OUTPUT_TAIL_LIMIT:],
            timed_out=bool(v.get("timed_out")),
        )
        for v in failed[:COMMANDS_LIMIT]
    )
    missing = body.get("deliverables_missing") or []
    found = body.get("agent")
    agent: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    session = agent.get("session_id") if with_session else None
    return Feedback(
        attempt=row.attempt,
        reason=reason[:2000],
        worker=str(body.get("worker") or row.worker),
        slot=str(body.get("slot") or ""),
        backend=str(agent.get("backend") or ""),
        session_id=session if isinstance(session, str) and session else None,
        account=row.account,
        verify=verify,
        missing=tuple(str(m) for m in missing if isinstance(m, str))[:MISSING_LIMIT],
    )
