"""Checkpoints of finished runs, removed from their remotes by `control gc`.

A worker pushes its agent's work in progress under `refs/superagent/wip/<run>/...`
(`control.worker.checkpoint`) so that an attempt replacing a lost one starts from it.
Once a run is finished nothing will ever start from them: `control merge` deletes the
run's own when it merges, and `control gc` deletes whatever a run left behind (a run
cancelled, a merge that never happened, a deletion that failed). One `ls-remote` per
remote, whatever the number of runs. Kept: the checkpoints of running runs, of
failed runs still within retention (`control retry` resumes from them), and of runs
this state database does not know (another orchestrator's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from control.errors import SuperagentError
from control.git import Workspace, workspace_root
from control.messages import WIP_REF_PREFIX
from control.state import RunRow, StateStore

log = logging.getLogger("superagent.checkpoint_gc")

ALL_RUNS = 1_000_000  # `StateStore.runs` takes a limit; gc looks at every run


@dataclass
class Forgotten:
    """What one sweep deleted, per run, and the remotes it could not clean (why)."""

    deleted: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def finished(run: RunRow) -> bool:
    """Whether no attempt of `run` can ever start from a checkpoint again: done or
    cancelled, or failed and pruned past retention (before that, a retry may)."""
    return run.status in ("done", "cancelled") or (
        run.status == "failed" and run.summary is not None
    )


def repo_url(run: RunRow) -> str | None:
    """The remote the run used (a `--repo` given to dispatch is written into its spec)."""
    repo = run.spec.get("repo") if isinstance(run.spec, dict) else None
    url = repo.get("url") if isinstance(repo, dict) else None
    return url if isinstance(url, str) and url else None


def forget_finished_checkpoints(store: StateStore, work_dir: Path) -> Forgotten:
    """Delete the checkpoints of every finished run of `store` from its remote, using
    the orchestrator's clones under `work_dir`. A remote that cannot be reached is
    named in the result; the others are cleaned all the same."""
    by_remote: dict[str, set[str]] = {}
    for run in store.runs(ALL_RUNS):
        url = repo_url(run)
        if url is not None and finished(run):
            by_remote.setdefault(url, set()).add(run.id)
    forgotten = Forgotten()
    for url, run_ids in sorted(by_remote.items()):
        try:
            workspace = Workspace(
                workspace_root(work_dir, url), url, author_name="superagent",
                author_email="superagent@localhost",
            )  # fmt: skip
            deleted = workspace.delete_remote_refs(WIP_REF_PREFIX, select=_of_runs(run_ids))
        except SuperagentError as exc:
            log.warning("cannot delete the checkpoints on %s: %s", url, exc)
            forgotten.failed[url] = str(exc)
            continue
        for ref in deleted:
            forgotten.deleted.setdefault(run_of(ref) or "", []).append(ref)
    return forgotten


def _of_runs(run_ids: set[str]) -> Callable[[str], bool]:
    return lambda ref: run_of(ref) in run_ids


def run_of(ref: str) -> str | None:
    """The run a checkpoint ref belongs to: `refs/superagent/wip/<run>/<phase>/<n>`."""
    if not ref.startswith(WIP_REF_PREFIX):
        return None
    run_id, sep, _rest = ref[len(WIP_REF_PREFIX) :].partition("/")
    return run_id if sep and run_id else None
