"""`control merge`: one integration branch holding every phase branch of a run.

The phase branches are merged at the exact commits the orchestrator verified, in
dependency order, onto the base; the spec's verify commands then run on the result,
and the branch is pushed with a lease. A conflict names the phase and the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import ConflictError, SuperagentError, UsageError
from control.git import Workspace, workspace_root
from control.messages import PrerequisiteRef
from control.names import repo_url_problem
from control.spec import Spec
from control.verify import run_verify


class MergeFailed(ConflictError):
    """The integration branch could not be built or its checks failed."""


@dataclass
class MergeResult:
    branch: str
    commit: str
    merged: list[dict[str, str]]
    verify: list[dict[str, Any]] = field(default_factory=list)


def integration_branch(spec: Spec, run_id: str) -> str:
    return f"{spec.repo.branch_prefix}/integration/{run_id}"


def merge_run(
    spec: Spec,
    run_id: str,
    commits: dict[str, tuple[str, str]],
    *,
    repo_url: str,
    work_dir: Path,
    verify: bool = True,
    verify_timeout_s: float = 900.0,
) -> MergeResult:
    """Merge `commits` (phase -> (branch, commit)) in topological order and push.

    `work_dir` holds the orchestrator's own clone (it is reused between merges).
    """
    if problem := repo_url_problem(repo_url):
        raise UsageError(f"repo {repo_url!r} {problem}")
    order = [p for p in spec.dag().order if p in commits]
    missing = sorted(set(spec.by_id) - set(commits))
    if missing:
        raise MergeFailed(f"run {run_id} is not finished: no commit for {', '.join(missing)}")
    workspace = Workspace(
        workspace_root(work_dir, repo_url),
        repo_url,
        author_name="superagent",
        author_email="superagent@localhost",
    )
    branch = integration_branch(spec, run_id)
    prerequisites = [PrerequisiteRef(p, *commits[p]) for p in order]
    try:
        prepared = workspace.prepare("merge", branch, spec.repo.base_branch, prerequisites)
    except SuperagentError as exc:
        raise MergeFailed(f"merging run {run_id}: {exc}") from exc
    results = []
    if verify:
        commands = [c for p in order for c in spec.phase(p).verify]
        results = [r.to_dict() for r in run_verify(prepared.path, commands, verify_timeout_s, None)]
        failed = [r for r in results if r["exit_code"] != 0]
        if failed:
            raise MergeFailed(
                f"the merged branch fails {len(failed)} verify command(s), first: "
                f"{failed[0]['command']} (exit {failed[0]['exit_code']})"
            )
    commit = workspace.push(prepared)
    workspace.release("merge")
    return MergeResult(branch, commit, prepared.merged, results)
