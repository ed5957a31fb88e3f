"""A conflict between phases at the final check, resolved by an agent like a phase.

When the phase branches do not merge onto each other at the final check (two
independent phases edited the same lines) and the spec lets superagent resolve
conflicts (`resolve_conflicts`, on by default), the next attempt of the final check
is a resolution task: a `PhaseTask`, run by a worker as any phase is, whose
prerequisites are every phase at its accepted commit, in merge order. The worker
merges them into a checkout and commits the conflicting merges with their markers,
as for a phase whose prerequisites conflict; the agent, shown each phase's task and
both sides' diffs (as data), resolves them; the worker refuses a result with markers
left, runs the conflicting phase's verify commands and pushes to the attempt's own
ref. Once the remote shows it there it is promoted to `<prefix>/resolve/<run>`, and
the final check after it merges every phase and then the resolution: each phase
comes in with it, since it contains them all (`control.git`: a prerequisite that a
later one contains). A resolution that fails is reported with the conflict.

It travels as an attempt of the final check (the same table, keys, liveness and
resend), so a killed orchestrator resumes it like one. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.errors import UsageError
from control.git import Workspace
from control.merge import MergeFailed, MergeRetry, merge_order
from control.messages import (
    IntegrationPhase,
    PhaseResponse,
    PhaseTask,
    PrerequisiteRef,
    attempt_ref,
    wip_ref,
)
from control.orchestrator import Orchestrator
from control.orchestrator.tasks import agent_object
from control.state import IntegrationRow

RESOLVE_PHASE = "_resolve"  # '_' never starts a phase id: no clash with the spec's
MAX_RESOLUTIONS = 2  # per run; past this, the conflict is reported
RESOLVE_TASK = (
    "The phases listed as prerequisites were each accepted on their own, but they do not "
    "merge onto each other: their merges are committed here with git's conflict markers. "
    "Resolve every conflict so that the result does what each phase's task asks for, keep "
    "everything else as it is, and remove every conflict marker."
)


def resolution_branch(orchestrator: Orchestrator) -> str:
    return f"{orchestrator.spec.repo.branch_prefix}/resolve/{orchestrator.run_id}"


def is_resolution(row: IntegrationRow) -> bool:
    """Whether an attempt of the final check is a resolution (a phase task)."""
    return isinstance(row.task, dict) and row.task.get("type") == "phase"


def conflict_of(row: IntegrationRow) -> dict[str, Any] | None:
    """The conflict a final check answered (the phase, its branch, the files), if any."""
    result = None if is_resolution(row) else row.answer()
    if result is None or result.status != "conflict" or result.conflict is None:
        return None
    return dict(result.conflict)


def resolution_task(
    orchestrator: Orchestrator,
    attempt: int,
    commits: Mapping[str, tuple[str, str]],
    conflict: Mapping[str, Any],
) -> PhaseTask:
    """The task that resolves `conflict`: every phase merged, the conflicts left for the
    agent of the phase that conflicted, checked with that phase's verify commands."""
    spec, run_id = orchestrator.spec, orchestrator.run_id
    order = merge_order(spec, run_id, commits)
    named = conflict.get("phase")
    phase = spec.phase(named if isinstance(named, str) and named in spec.by_id else order[-1].phase)
    agent = agent_object(phase, orchestrator.agent_override)
    replay_files: dict[str, str] = {}
    replay_patch = None
    if agent.get("backend") == "replay":
        replay_files, replay_patch = orchestrator._recording(RESOLVE_PHASE)
    return PhaseTask(
        run_id=run_id,
        phase_id=RESOLVE_PHASE,
        attempt=attempt,
        title="Resolve the conflicts between phases",
        task=RESOLVE_TASK,
        branch=resolution_branch(orchestrator),
        repo_url=orchestrator.repo_url,
        base_branch=spec.repo.base_branch,
        deliverables=(),
        verify=phase.verify,
        prerequisites=tuple(
            PrerequisiteRef(p.phase, p.branch, p.commit, "", spec.phase(p.phase).task)
            for p in order
        ),
        agent=agent,
        timeout_s=phase.timeout_minutes * 60,
        silence_s=phase.silence_minutes * 60,
        verify_timeout_s=min(phase.timeout_minutes * 60, 1800.0),
        verify_network=phase.verify_network,
        project=spec.name,
        replay_files_b64=replay_files,
        replay_patch_b64=replay_patch,
        push_ref=attempt_ref(run_id, RESOLVE_PHASE, attempt),
        checkpoint_ref=wip_ref(run_id, RESOLVE_PHASE, attempt),
        checkpoint_interval_s=phase.checkpoint_minutes * 60,
        resolve_conflicts=True,
    )


def judge_resolution(row: IntegrationRow, remote: Workspace) -> IntegrationPhase:
    """The accepted resolution, promoted to its branch once the remote shows it at its
    attempt's ref; MergeRetry when the worker did not finish, MergeFailed when the
    agent's resolution failed."""
    try:
        response = PhaseResponse.from_message(row.response)
    except (UsageError, TypeError, AttributeError) as exc:
        raise MergeRetry(f"the resolution on {row.worker} answered nothing usable: {exc}") from exc
    if response.lease_lost or response.status == "cancelled":
        raise MergeRetry(f"the resolution on {row.worker} did not finish: {response.reason}")
    if not (response.state == "done" and response.status == "done" and response.commit):
        raise MergeFailed(f"its resolution failed: {response.reason or response.status}")
    task = PhaseTask.from_payload(row.task)
    ref = task.push_ref or ""
    found = remote.remote_ref(ref)
    if found != response.commit:
        raise MergeRetry(
            f"{row.worker} reported {ref} at {response.commit} but the remote has "
            f"{found or 'nothing'}"
        )
    remote.promote(ref, response.commit, task.branch)
    return IntegrationPhase(RESOLVE_PHASE, task.branch, response.commit)


def accepted_resolution(rows: list[IntegrationRow]) -> IntegrationPhase | None:
    """The newest resolution accepted in this run (None: none), read from its row."""
    for row in reversed(rows):
        if is_resolution(row) and row.state == "done":
            response = PhaseResponse.from_message(row.response)
            return IntegrationPhase(RESOLVE_PHASE, str(row.task["branch"]), response.commit or "")
    return None
