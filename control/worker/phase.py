"""One attempt of one phase on a worker: checkout, agent, checks, commit, push, response.

Nothing is trusted on an exit code: the agent's result, the deliverables, the
verify commands and the pushed commit decide whether the response says `done`.
Whatever happens, the response says what was done, how long it took and why it
failed, and names the log of the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import SuperagentError, UsageError
from control.git import MergeConflict, Workspace, workspace_root
from control.messages import (
    IntegrationTask,
    PhaseTask,
    is_integration_payload,
    is_phase_payload,
)
from control.queue import Claimed
from control.verify import check_deliverables, run_verify
from control.worker.agents import AgentOptions, AgentRequest, request_for_task, run_agent
from control.worker.config import WorkerConfig
from control.worker.daemon import SHUTDOWN, Outcome, RunControl
from control.worker.integrate import run_integration
from control.worker.logs import log_path_for
from control.worker.outside import Snapshot, snapshot, writes_outside


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
    """The daemon's executor (see `control.worker.daemon.Executor`): phase tasks, the
    final check of a run (`control.worker.integrate`) and free-form tasks."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    def __call__(self, claimed: Claimed, control: RunControl, slot: str) -> Outcome:
        payload = claimed.payload
        if isinstance(payload, dict) and payload.get("type") == "freeform":
            return self._freeform(claimed, control)
        if is_integration_payload(payload):
            try:
                integration = IntegrationTask.from_payload(payload)
            except UsageError as exc:
                return Outcome("failed", {"status": "failed"}, f"bad integration task: {exc}")
            return run_integration(self.config, integration, claimed, control, slot)
        if not is_phase_payload(payload):
            return Outcome(
                "failed",
                {"status": "failed", "worker": self.config.worker_id},
                "not a task this worker knows (expected a phase, an integration or a "
                "free-form task)",
            )
        try:
            task = PhaseTask.from_payload(claimed.payload)
        except UsageError as exc:
            return Outcome("failed", {"status": "failed"}, f"bad phase task: {exc}")
        return _Attempt(self.config, task, claimed, control, slot).run()

    def _freeform(self, claimed: Claimed, control: RunControl) -> Outcome:
        """A free-form task (`control enqueue HOST`): the agent in a scratch directory."""
        payload = claimed.payload
        text = payload.get("text")
        agent = payload.get("agent") or {}
        response: dict[str, Any] = {"status": "failed", "worker": self.config.worker_id}
        if not isinstance(text, str) or not text.strip() or not isinstance(agent, dict):
            return Outcome("failed", response, "a free-form task needs text (and an agent object)")
        scratch = self.config.work_dir / "freeform" / str(claimed.id)
        scratch.mkdir(parents=True, exist_ok=True)
        log = log_path_for(self.config.logs_dir, claimed.id, "freeform", claimed.attempt)
        control.log_path = str(log)
        try:
            request = AgentRequest(
                phase_id="freeform",
                task=text,
                checkout=scratch,
                log_path=log,
                options=AgentOptions.from_dict({k: v for k, v in agent.items() if k != "backend"}),
                credential_file=self.config.credential_file,
                cancel=control.event,
            )
            result = run_agent(
                str(agent.get("backend") or "claude-code"), request, keep_logs=self.config.keep_logs
            )
        except UsageError as exc:
            return Outcome("failed", response, str(exc))
        status = {"ok": "done", "rate_limited": "rate_limited", "cancelled": "cancelled"}.get(
            result.status, "failed"
        )
        response.update(
            status=status,
            summary=(result.result_text or "")[:4000],
            agent={k: v for k, v in result.to_dict().items() if k != "result_text"},
            log=str(log),
            directory=str(scratch),
        )
        return Outcome(status, response, None if status == "done" else result.reason)


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
        self.log_path = log_path_for(config.logs_dir, claimed.id, task.phase_id, task.attempt)
        control.log_path = str(self.log_path)
        self.response: dict[str, Any] = {
            "status": "failed",
            "run_id": task.run_id,
            "phase": task.phase_id,
            "attempt": task.attempt,
            "worker": config.worker_id,
            "slot": slot,
            "branch": task.branch,
            "push_ref": task.push_ref,
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
                conflict=exc.to_dict(),
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
        results = run_verify(prepared.path, task.verify, task.verify_timeout_s, self.log_path)
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
            pushed = workspace.push(prepared, task.push_ref)
        except SuperagentError as exc:
            self.clock.mark("push")
            return self._end("failed", f"commit or push failed: {exc}")
        self.clock.mark("push")
        return self._end("done", None, commit=pushed)

    def _snapshot(self, checkout: Path) -> Snapshot:
        return snapshot(self.config.work_dir, checkout)
