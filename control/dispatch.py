"""`control dispatch`: validate, create or resume the run, drive it to its end, merge.

Running the same command again resumes the latest run of that spec; a spec
whose content changed since is refused (the run would mix two plans) unless a
new run is asked for.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control.errors import ConflictError, UsageError
from control.inventory import Worker
from control.merge import MergeFailed, merge_run
from control.names import repo_url_problem
from control.orchestrator import Emit, Orchestrator, RunOutcome, Settings
from control.spec import Spec, load_spec
from control.state import StateStore
from control.transport import Transports


def spec_hash(spec: Spec) -> str:
    body = json.dumps(spec.to_dict() | {"path": None}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class Dispatch:
    """One `control dispatch`: the orchestrator, its store, and how to end."""

    orchestrator: Orchestrator
    store: StateStore
    run_id: str
    resumed: bool
    merge: bool = True
    verify_merge: bool = True

    def drive(
        self,
        stop: threading.Event | None = None,
        *,
        timeout_s: float | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> RunOutcome:
        """Tick until the run ends (or `stop` is set, or the timeout passes)."""
        orchestrator = self.orchestrator
        stop = stop or threading.Event()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            outcome = orchestrator.outcome()
            if outcome is not None:
                return self._finish(outcome)
            if stop.is_set():
                raise KeyboardInterrupt
            if deadline is not None and time.monotonic() > deadline:
                reason = f"timed out after {timeout_s:g}s with phases still open"
                self.store.finish_run(self.run_id, "failed", reason)
                return RunOutcome(self.run_id, "failed", self.store.phases(self.run_id), reason)
            orchestrator.tick()
            if on_tick is not None:
                on_tick()
            if orchestrator.outcome() is None:
                stop.wait(orchestrator.settings.poll_interval_s)

    def _finish(self, outcome: RunOutcome) -> RunOutcome:
        run = self.store.run(self.run_id)
        if run.status == "cancelled":  # `control cancel` ended it while we ran
            return RunOutcome(self.run_id, "cancelled", outcome.phases, run.reason, outcome.dead)
        if outcome.status == "done" and self.merge and run.merge_commit is None:
            commits = {p: (row.branch, row.commit_sha or "") for p, row in outcome.phases.items()}
            try:
                result = merge_run(
                    self.orchestrator.spec,
                    self.run_id,
                    commits,
                    repo_url=self.orchestrator.repo_url,
                    work_dir=self.orchestrator.work_dir,
                    verify=self.verify_merge,
                )
            except MergeFailed as exc:
                self.store.finish_run(self.run_id, "failed", str(exc))
                self.orchestrator.emit("merge_failed", {"reason": str(exc)})
                return RunOutcome(self.run_id, "failed", outcome.phases, str(exc))
            self.store.set_merge(self.run_id, result.branch, result.commit)
            self.orchestrator.emit("merged", {"branch": result.branch, "commit": result.commit})
        if run.status != outcome.status:
            self.store.finish_run(self.run_id, outcome.status, outcome.reason)
        return outcome


def open_dispatch(
    spec_path: Path,
    workers: Sequence[Worker],
    state_path: Path,
    *,
    new_run: bool = False,
    settings: Settings | None = None,
    repo_url: str | None = None,
    agent: dict[str, Any] | None = None,
    replay_dir: Path | None = None,
    transports: Transports | None = None,
    emit: Emit | None = None,
    merge: bool = True,
) -> Dispatch:
    """Validate, then create a run or resume the latest one of this spec."""
    if not workers:
        raise UsageError("no workers: the inventory has no host in group `workers`")
    if repo_url is not None and (problem := repo_url_problem(repo_url)):
        raise UsageError(f"--repo {repo_url!r} {problem}")
    spec = load_spec(spec_path, workers)
    store = StateStore(state_path)
    key = str(spec_path.resolve())
    digest = spec_hash(spec)
    latest = None if new_run else store.latest_run(key)
    if latest is not None and latest.spec_hash != digest:
        store.close()
        raise ConflictError(
            f"{spec_path} changed since run {latest.id}; resume it with the old spec or "
            "start over with --new-run"
        )
    if latest is None:
        document = spec.to_dict()
        if repo_url is not None:  # `control merge` later builds on the remote the run used
            document["repo"]["url"] = repo_url
        run_id = store.create_run(key, digest, document, [(p.id, p.branch) for p in spec.phases])
        resumed = False
    else:
        run_id, resumed = latest.id, True
        if latest.status == "failed":
            store.reopen_run(run_id)
    orchestrator = Orchestrator(
        spec,
        workers,
        store,
        transports or Transports(),
        settings,
        repo_url=repo_url,
        agent=agent,
        replay_dir=replay_dir,
        emit=emit,
    )
    orchestrator.attach(run_id)
    return Dispatch(orchestrator, store, run_id, resumed, merge=merge)
