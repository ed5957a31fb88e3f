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
from dataclasses import dataclass, replace

from control.messages import Feedback, wip_ref
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
    response = row.answer()
    return row.state == "failed" and response is not None and response.status == "failed"


def feedback_of(row: AttemptRow, *, with_session: bool = True) -> Feedback:
    """The feedback a failed attempt gives the next one, cut to size."""
    response = row.answer()
    if response is None:  # the inbox's word alone (no answer from the worker)
        message = row.response if isinstance(row.response, Mapping) else {}
        reason = str(message.get("reason") or row.reason or "it failed")
        return Feedback(attempt=row.attempt, reason=reason[:2000], worker=row.worker,
                        account=row.account)  # fmt: skip
    verify = tuple(
        replace(v, output_tail=v.output_tail[-OUTPUT_TAIL_LIMIT:])
        for v in response.failed_checks[:COMMANDS_LIMIT]
    )
    return Feedback(
        attempt=row.attempt,
        reason=(response.reason or row.reason or "it failed")[:2000],
        worker=response.worker or row.worker,
        slot=response.slot,
        backend=response.backend,
        session_id=response.session_id if with_session else None,
        account=row.account,
        verify=verify,
        missing=response.missing[:MISSING_LIMIT],
    )
