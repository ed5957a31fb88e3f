"""One attempt of one phase on a worker: checkout, agent, checks, commit, push, response.

Nothing is trusted on an exit code: the agent's result, the deliverables, the
verify commands and the pushed commit decide whether the response says `done`.
Whatever happens, the response says what was done, how long it took and why it
failed, and names the log of the run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import SuperagentError, UsageError
from control.messages import PhaseTask, is_phase_payload
from control.queue import Claimed
from control.worker.agents import request_for_task, run_agent
from control.worker.config import WorkerConfig
from control.worker.daemon import SHUTDOWN, Outcome, RunControl
from control.worker.git import MergeConflict, Workspace, workspace_root
from control.worker.verify import (
    Snapshot,
    check_deliverables,
    run_verify,
    snapshot,
    writes_outside,
)

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _SAFE.sub("_", name)[:80] or "_"


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass
class _Clock:
    """Durations of the steps of one attempt, in seconds."""

    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self.marks[step] = round(now - self._last, 3)
        self._last = now

    def report(self) -> dict[str, float]:
        return {**self.marks, "total": round(time.monotonic() - self.started, 3)}


class PhaseExecutor:
    """The daemon's executor for phase tasks (see `control.worker.daemon.Executor`)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    def __call__(self, claimed: Claimed, control: RunControl, slot: str) -> Outcome:
        if not is_phase_payload(claimed.payload):
            return Outcome(
                "failed",
                {"status": "failed", "worker": self.config.worker_id},
                "this worker only runs phase tasks; free-form tasks need a spec-less agent run",
            )
        try:
            task = PhaseTask.from_payload(claimed.payload)
        except UsageError as exc:
            return Outcome("failed", {"status": "failed"}, f"bad phase task: {exc}")
        return _Attempt(self.config, task, claimed, control, slot).run()


class _Attempt:
    def __init__(
        self,
        config: WorkerConfig,
        task: PhaseTask,
        claimed: Claimed,
        control: RunControl,
        slot: str,
    ) -> None:
        self.config, self.task, self.claimed, self.control, self.slot = (
            config,
            task,
            claimed,
            control,
            slot,
        )
        self.clock = _Clock()
        self.log_path = (
            config.logs_dir
            / _safe(task.run_id)
            / f"{_safe(task.phase_id)}-attempt{task.attempt}-msg{claimed.id}.log"
        )
        self.response: dict[str, Any] = {
            "status": "failed",
            "run_id": task.run_id,
            "phase": task.phase_id,
            "attempt": task.attempt,
            "worker": config.worker_id,
            "slot": slot,
            "branch": task.branch,
            "commit": None,
            "log": str(self.log_path),
        }

    def _end(self, status: str, reason: str | None = None, **extra: Any) -> Outcome:
        if self.control.stopped and status != "done":
            status = "cancelled"
            reason = self.control.reason if self.control.reason != SHUTDOWN else reason
        self.response.update(extra, status=status, reason=reason, durations=self.clock.report())
        return Outcome(status, self.response, reason)

    def run(self) -> Outcome:  # noqa: PLR0911  one early return per way an attempt fails
        task = self.task
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            workspace = Workspace(
                workspace_root(self.config.work_dir, task.repo_url),
                task.repo_url,
                author_name=self.config.git_author_name,
                author_email=self.config.git_author_email,
            )
            prepared = workspace.prepare(
                self.slot, task.branch, task.base_branch, task.prerequisites
            )
        except MergeConflict as exc:
            self.clock.mark("prepare")
            return self._end(
                "conflict",
                str(exc),
                conflict={
                    "phase": exc.phase,
                    "branch": exc.branch,
                    "commit": exc.commit,
                    "files": exc.files,
                },
            )
        except SuperagentError as exc:
            self.clock.mark("prepare")
            return self._end("failed", f"preparing the checkout failed: {exc}")
        self.clock.mark("prepare")
        self.response.update(base_commit=prepared.base_commit, merged=prepared.merged)

        try:
            backend, request = request_for_task(
                task,
                checkout=prepared.path,
                log_path=self.log_path,
                credential_file=self.config.credential_file,
                cancel=self.control.event,
            )
        except UsageError as exc:
            return self._end("failed", str(exc))
        before = self._snapshot(prepared.path)
        result = run_agent(backend, request, keep_logs=self.config.keep_logs)
        self.clock.mark("agent")
        self.response["agent"] = {
            key: value
            for key, value in result.to_dict().items()
            if key not in ("log_path", "result_text")
        }
        self.response["summary"] = (result.result_text or "")[:2000]
        if result.status == "rate_limited":
            return self._end(
                "rate_limited", result.reason, rate_limit_reset=result.rate_limit_reset
            )
        if result.status != "ok":
            return self._end("failed", f"agent {result.status}: {result.reason}")

        outside = writes_outside(before, self._snapshot(prepared.path))
        if outside:
            return self._end(
                "failed", "the agent wrote outside its checkout: " + ", ".join(outside[:10])
            )
        missing = check_deliverables(prepared.path, task.deliverables)
        if missing:
            return self._end(
                "failed",
                "deliverables missing: " + "; ".join(missing),
                deliverables_missing=missing,
            )
        ignored = workspace.ignored(prepared, [d for d in task.deliverables if not _is_glob(d)])
        if ignored:
            return self._end(
                "failed",
                "deliverables ignored by git (they would not be pushed): " + ", ".join(ignored),
            )
        with self.log_path.open("a", encoding="utf-8") as log:
            results = run_verify(prepared.path, task.verify, task.verify_timeout_s, log)
        self.clock.mark("verify")
        self.response["verify"] = [r.to_dict() for r in results]
        failed = [r for r in results if r.exit_code != 0]
        if failed:
            first = failed[0]
            return self._end(
                "failed",
                f"verify command failed (exit {first.exit_code}"
                f"{', timed out' if first.timed_out else ''}): {first.command}",
            )
        if self.control.stopped:
            return self._end("cancelled", self.control.reason)
        try:
            head = workspace.commit_all(
                prepared, f"superagent: {task.phase_id} ({task.run_id}, attempt {task.attempt})"
            )
            if head == prepared.head:
                return self._end("failed", "the agent changed nothing in the checkout")
            pushed = workspace.push(prepared)
        except SuperagentError as exc:
            self.clock.mark("push")
            return self._end("failed", f"commit or push failed: {exc}")
        self.clock.mark("push")
        return self._end("done", None, commit=pushed)

    def _snapshot(self, checkout: Path) -> Snapshot:
        return snapshot(self.config.work_dir, checkout)
