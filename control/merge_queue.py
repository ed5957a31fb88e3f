"""The merge queue: which merged state to check next, and which phase broke one.

The integration branch only ever holds verified states: each is a check of the
final check's kind (`control.integration`, done by a worker) that passed, holding a
dependency-closed set of the run's done phases at their accepted commits. The next
check holds the last verified state plus every done phase not in it (a batch, in
merge order). When a check fails its verify commands, the batch is bisected by
dependency-closed halves (a prefix of the merge order is one): the first half onto
the verified state is checked; if it passes it is the new verified state and the
culprit is in the second half, otherwise in the first; a batch of one phase is the
culprit, with no further check. Since a verified state passed, the phase whose
addition fails is the one that breaks it, alone or only in combination with
another: each passed its own verify.

The culprit (and every done phase depending on it: their branches hold it) goes
back to `waiting` with the failure as feedback (`StateStore.reopen_phases`); its
next attempt is shown the failing command and its output, and the run goes on. A
phase that breaks the integration more than its `feedback_rounds` times ends the
run with the failure.

Everything here is decided from the state database's rows (the checks, with their
tasks and answers, and the phases at their commits): a killed orchestrator resumes
the queue where it was, and the same rows always give the same next step. Nothing
here runs anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control.dag import Dag
from control.merge import MergeFailed
from control.messages import Feedback, IntegrationResult, VerifyResult
from control.orchestrator import IN_FLIGHT, Orchestrator
from control.recovery import COMMANDS_LIMIT, OUTPUT_TAIL_LIMIT
from control.resolution import RESOLVE_PHASE, is_resolution
from control.state import IntegrationRow, StateStore


@dataclass(frozen=True)
class Verified:
    """A state of the integration branch that passed its checks."""

    key: str
    commit: str
    phases: Mapping[str, str]  # phase -> the commit it holds


@dataclass(frozen=True)
class Next:
    """What the queue does next: check `check` (the phases of a state, in merge order),
    or reopen `culprit`, found by the failing check `failure`; neither: nothing to do."""

    check: tuple[str, ...] = ()
    culprit: str | None = None
    failure: IntegrationRow | None = None
    bisecting: bool = False  # `check` is part of a state that failed


@dataclass(frozen=True)
class Reopened:
    """The merge queue sent `phases` (the culprit first, then its dependents) back."""

    culprit: str
    phases: tuple[str, ...]
    reason: str


def held(row: IntegrationRow) -> dict[str, str]:
    """The phases a check merged, at their commits (an accepted resolution excluded)."""
    task = row.task if isinstance(row.task, dict) else {}
    return {
        str(p.get("phase")): str(p.get("commit"))
        for p in task.get("phases") or []
        if isinstance(p, dict) and p.get("phase") != RESOLVE_PHASE
    }


def verify_failure(row: IntegrationRow) -> IntegrationResult | None:
    """The answer of a check whose merged tree failed verify commands (not a conflict,
    not a worker that did not finish): what the queue bisects."""
    if is_resolution(row) or row.state != "failed":
        return None
    result = row.answer()
    if result is None or result.status != "failed" or not result.failed_phases:
        return None
    return result


def verified(rows: Sequence[IntegrationRow]) -> list[Verified]:
    """The states that passed, oldest first."""
    found = []
    for row in rows:
        result = row.answer() if row.state == "done" and not is_resolution(row) else None
        if result is not None and result.commit:
            found.append(Verified(row.key, result.commit, held(row)))
    return found


def plan(dag: Dag, commits: Mapping[str, str], rows: Sequence[IntegrationRow]) -> Next:
    """The queue's next step from the run's checks (`rows`) and its done phases at their
    accepted commits (`commits`), in merge order (`dag.order`). A check that holds a
    phase at another commit than its accepted one (reopened since) no longer counts."""
    order = dag.order

    def current(phases: Mapping[str, str]) -> bool:
        return all(commits.get(p) == c for p, c in phases.items())

    states = [s for s in verified(rows) if current(s.phases)]
    base = dict(states[-1].phases) if states else {}
    failing = [
        row
        for row in rows
        if verify_failure(row) is not None and current(held(row)) and base.keys() < held(row).keys()
    ]
    if failing:
        failure = min(reversed(failing), key=lambda r: len(held(r)))  # the newest smallest
        part = [p for p in order if p in held(failure) and p not in base]
        if len(part) == 1:
            return Next(culprit=part[0], failure=failure)
        half = set(part[: len(part) // 2])
        return Next(check=tuple(p for p in order if p in base or p in half), bisecting=True)
    batch: list[str] = []
    for phase in order:
        if phase not in commits or phase in base:
            continue
        if all(d in base or d in batch for d in dag.depends_on[phase]):
            batch.append(phase)
    if not batch:
        return Next()
    return Next(check=tuple(p for p in order if p in base or p in batch))


def reopen(
    store: StateStore,
    run_id: str,
    step: Next,
    dag: Dag,
    rounds: int,
) -> Reopened:
    """Send the culprit of `step` (and its done dependents) back with the failure as
    feedback; MergeFailed when it broke the integration `rounds` times already."""
    culprit, failure = step.culprit, step.failure
    assert culprit is not None and failure is not None
    result = verify_failure(failure)
    assert result is not None
    others = [p for p in dag.order if p in held(failure) and p != culprit]
    reason = (
        f"phase {culprit!r} passes its own verify, but merged with "
        f"{', '.join(others) or 'the base branch'} the integration fails: {result.reason}"
    )
    before = [r for r in store.reopens(run_id, culprit) if r.culprit == culprit]
    if len(before) >= rounds:
        raise MergeFailed(f"{reason} (it broke the integration {len(before) + 1} times)")
    phases = store.phases(run_id)
    failed = tuple(
        VerifyResult(c.command, c.exit_code, c.output_tail[-OUTPUT_TAIL_LIMIT:], c.timed_out)
        for c in result.checks
        if not c.ok
    )[:COMMANDS_LIMIT]
    sent: dict[str, tuple[int, dict[str, object]]] = {}
    built_on = dag.blocked_by([culprit])
    for phase in [culprit, *(p for p in dag.order if p in built_on)]:
        row = phases[phase]
        if row.state != "done":
            continue
        told = reason if phase == culprit else f"its prerequisite {culprit!r} is redone: {reason}"
        feedback = Feedback(
            attempt=row.attempt, reason=told[:2000], worker=row.worker or "", verify=failed
        )
        sent[phase] = (row.attempt, feedback.to_dict())
    moved = store.reopen_phases(run_id, culprit, failure.key, sent)
    return Reopened(culprit, tuple(moved), reason)


def built_on_in_flight(orchestrator: Orchestrator, culprit: str) -> bool:
    """Whether a phase building on `culprit` is running: its result would hold the
    culprit's refused commit, so the reopen waits until it is done (then reopened too)."""
    phases = orchestrator.store.phases(orchestrator.run_id)
    return any(phases[p].state in IN_FLIGHT for p in orchestrator.dag.blocked_by([culprit]))


def superseded(
    dag: Dag, commits: Mapping[str, str], rows: Sequence[IntegrationRow], open_row: IntegrationRow
) -> bool:
    """Whether the check in flight (`open_row`) holds part of the run while every phase
    is now done and nothing is bisected: the whole run is checked at once instead, since
    waiting for the part would only delay the end of the run."""
    whole = set(dag.order)
    if is_resolution(open_row) or set(commits) != whole or set(held(open_row)) == whole:
        return False
    step = plan(dag, commits, [r for r in rows if r.key != open_row.key])
    return not step.bisecting and step.culprit is None and set(step.check) == whole
