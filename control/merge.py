"""The final check of a run as the orchestrator sees it: what to ask, what to believe.

The phase branches are merged at the exact commits the orchestrator verified, in
dependency order, onto the base; each distinct verify command then runs once on
the result, and each test file named by several phases' commands once
(`control.checkset`). A worker does all of that (`control.worker.integrate`): here the task
is planned and the worker's answer judged against the remote, where the attempt's
pushed ref must sit at the reported commit and contain every accepted phase commit;
only then is the integration branch pointed at it. Nothing here runs a verify
command or reads a file of the repository.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from control.checkset import distinct_checks
from control.errors import ConflictError
from control.git import Workspace
from control.messages import (
    IntegrationPhase,
    IntegrationResult,
    IntegrationTask,
    integration_ref,
)
from control.spec import Spec


class MergeFailed(ConflictError):
    """The integration branch could not be built or its checks failed."""


class MergeRetry(MergeFailed):
    """The final check did not happen as asked (a worker error, a push that is not on
    the remote): another attempt, on another worker if there is one, may succeed."""


@dataclass
class MergeResult:
    branch: str
    commit: str
    merged: list[dict[str, str]]
    checks: list[dict[str, Any]] = field(default_factory=list)
    worker: str = ""


def integration_branch(spec: Spec, run_id: str) -> str:
    return f"{spec.repo.branch_prefix}/integration/{run_id}"


def merge_order(
    spec: Spec,
    run_id: str,
    commits: Mapping[str, tuple[str, str]],
    only: Collection[str] | None = None,
) -> tuple[IntegrationPhase, ...]:
    """Every phase (or those in `only`: a state of the merge queue) as (phase, branch,
    commit), in dependency order; all of them must be there."""
    wanted = [p for p in spec.dag().order if only is None or p in only]
    missing = sorted(p for p in wanted if not (commits.get(p) or ("", ""))[1])
    if missing:
        raise MergeFailed(f"run {run_id} is not finished: no commit for {', '.join(missing)}")
    return tuple(IntegrationPhase(p, *commits[p]) for p in wanted)


def asked_checks(spec: Spec, order: tuple[IntegrationPhase, ...]) -> list[tuple[str, str]]:
    """(phase, command) for every verify command of every phase, in merge order."""
    return [(entry.phase, command) for entry in order for command in spec.phase(entry.phase).verify]


def integration_task(
    spec: Spec,
    run_id: str,
    attempt: int,
    commits: Mapping[str, tuple[str, str]],
    *,
    repo_url: str,
    verify: bool = True,
    verify_timeout_s: float = 900.0,
    after: tuple[IntegrationPhase, ...] = (),
    only: Collection[str] | None = None,
) -> IntegrationTask:
    """The final check of `run_id` as a worker's task (`commits`: phase -> (branch, commit));
    `after` is merged last (an accepted resolution of a conflict between phases). With
    `only`, a state of the merge queue: those phases, with their checks only."""
    order = merge_order(spec, run_id, commits, only)
    timeout_s = max((spec.phase(p.phase).timeout_minutes * 60 for p in order), default=3600.0)
    return IntegrationTask(
        run_id=run_id,
        attempt=attempt,
        repo_url=repo_url,
        base_branch=spec.repo.base_branch,
        branch=integration_branch(spec, run_id),
        phases=order + after,
        checks=distinct_checks(asked_checks(spec, order)) if verify else (),
        verify_timeout_s=verify_timeout_s,
        timeout_s=float(timeout_s),
        project=spec.name,
        push_ref=integration_ref(run_id, attempt),
    )


def conflict_reason(run_id: str, conflict: Mapping[str, Any]) -> str:
    """A conflict at the final check in one line: the phase, its branch, the files."""
    files = ", ".join(conflict.get("files") or []) or "(git named no files)"
    return (
        f"merging run {run_id}: phase {conflict.get('phase')!r} ({conflict.get('branch')}) "
        f"conflicts in {files}"
    )


def judge(task: IntegrationTask, result: IntegrationResult, remote: Workspace) -> MergeResult:
    """Believe a `done` answer only as far as the remote shows it; MergeFailed otherwise.

    A conflict names the phase and the files; failed checks name the phases that
    asked for them. Only git objects are compared here: nothing of the tree runs.
    """
    if result.status == "conflict" and result.conflict:
        raise MergeFailed(conflict_reason(task.run_id, result.conflict))
    if result.status != "done":
        error = MergeFailed if result.failed_phases else MergeRetry
        raise error(f"the final check on {result.worker or 'a worker'}: {result.reason}")
    if not result.commit:
        raise MergeRetry(f"{result.worker or 'the worker'} reported {task.branch} without a commit")
    tip, missing = remote.missing_from(task.push_ref, [p.commit for p in task.phases])
    if tip != result.commit:
        raise MergeRetry(
            f"{result.worker or 'the worker'} reported {task.push_ref} at {result.commit} "
            f"but the remote has {tip or 'nothing'}"
        )
    if missing:
        lost = [p.phase for p in task.phases if p.commit in missing]
        raise MergeRetry(
            f"{task.push_ref} at {tip[:12]} does not contain the accepted commit of "
            f"{', '.join(lost)}"
        )
    remote.promote(task.push_ref, tip, task.branch)  # only now does the branch move
    return MergeResult(
        branch=task.branch,
        commit=tip,
        merged=[{"phase": p.phase, "branch": p.branch, "commit": p.commit} for p in task.phases],
        checks=[
            {
                "command": c.command,
                "phases": list(c.phases),
                "exit_code": c.exit_code,
                "duration_s": c.duration_s,
            }
            for c in result.checks
        ],
        worker=result.worker,
    )
