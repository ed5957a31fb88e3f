"""One attempt of one phase on a worker: checkout, agent, checks, commit, push, response.

Nothing is trusted on an exit code: the agent's result, the deliverables, the
verify commands and the pushed commit decide whether the response says `done`.
Whatever happens, the response says what was done, how long it took and why it
failed, and names the log of the run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from control.errors import SuperagentError, UnavailableError, UsageError
from control.git import MergeConflict, Prepared, Workspace, remove_tree, workspace_root
from control.messages import (
    Feedback,
    IntegrationTask,
    PhaseResponse,
    PhaseTask,
    is_freeform_payload,
    is_integration_payload,
    is_phase_payload,
)
from control.process import Redactor, Wrap
from control.queue import Claimed
from control.verify import check_deliverables, conflict_markers_left, run_verify
from control.worker.agents import request_for_task, run_agent
from control.worker.checkpoint import Checkpoints, SessionHomes
from control.worker.config import WorkerConfig
from control.worker.contract import SHUTDOWN, MessageOutcome, RunControl
from control.worker.freeform import FREEFORM_DIR, run_freeform
from control.worker.integrate import run_integration
from control.worker.logs import log_path_for
from control.worker.outside import HOME_SENSITIVE, Snapshot, snapshot, writes_outside
from control.worker.prompt import Conflict
from control.worker.sandbox import Jail, Sandbox, sandbox_for
from control.worker.secrets import (
    account_credential,
    known_secrets,
    redact_tree,
    secrets_in_files,
)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def resumes_here(
    feedback: Feedback | None, worker: str, slot: str, backend: str, account: object,
    *, restored: bool,
) -> bool:  # fmt: skip
    """A session is resumed where it lives: this worker and slot, the same backend, the
    same account (Claude Code keeps an account's sessions in its configuration
    directory), and the checkout holding its work again (restored from its checkpoint)."""
    return (
        feedback is not None
        and feedback.session_id is not None
        and feedback.worker == worker
        and feedback.slot == slot
        and feedback.backend == backend
        and feedback.account == account
        and restored
    )


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
    """The daemon's executor (see `control.worker.contract.Executor`): phase tasks, the
    final check of a run (`control.worker.integrate`) and free-form tasks."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._sandbox_lock = threading.Lock()
        self._sandbox: Sandbox | None = None
        self._sandbox_checked = False

    def sandbox(self) -> Sandbox | None:
        """The sandbox phases run in (found once); None on a trusted host.
        UnavailableError when this host cannot provide it."""
        with self._sandbox_lock:
            if not self._sandbox_checked:
                self._sandbox = sandbox_for(self.config)
                self._sandbox_checked = True
            return self._sandbox

    def __call__(self, claimed: Claimed, control: RunControl, slot: str) -> MessageOutcome:
        payload = claimed.payload
        worker = self.config.worker_id
        try:
            sandbox = self.sandbox()
        except UnavailableError as exc:
            return MessageOutcome.refused(worker, f"refusing the task: {exc}")
        if is_freeform_payload(payload):
            return run_freeform(self.config, claimed, control, sandbox)
        if is_integration_payload(payload):
            return self._integration(claimed, control, slot, sandbox)
        if not is_phase_payload(payload):
            return MessageOutcome.refused(
                worker,
                "not a task this worker knows (expected a phase, an integration or a "
                "free-form task)",
            )
        try:
            task = PhaseTask.from_payload(claimed.payload)
        except UsageError as exc:
            return MessageOutcome.refused(worker, f"bad phase task: {exc}")
        return _Attempt(self.config, task, claimed, control, slot, sandbox).run()

    def _integration(
        self, claimed: Claimed, control: RunControl, slot: str, sandbox: Sandbox | None
    ) -> MessageOutcome:
        try:
            integration = IntegrationTask.from_payload(claimed.payload)
        except UsageError as exc:
            return MessageOutcome.refused(self.config.worker_id, f"bad integration task: {exc}")
        return run_integration(self.config, integration, claimed, control, slot, sandbox)


class _Attempt:
    def __init__(
        self,
        config: WorkerConfig,
        task: PhaseTask,
        claimed: Claimed,
        control: RunControl,
        slot: str,
        sandbox: Sandbox | None,
    ) -> None:
        self.config, self.task, self.claimed, self.control, self.slot = (
            config,
            task,
            claimed,
            control,
            slot,
        )
        self.sandbox = sandbox
        self.secrets = known_secrets(config)
        self.redact = Redactor(self.secrets)
        self.scratch = config.work_dir / "scratch" / slot
        self.clock = _Clock()
        self.log_path = log_path_for(config.logs_dir, claimed.id, task.phase_id, task.attempt)
        control.log_path = str(self.log_path)
        self.response = PhaseResponse(  # filled in step by step; `_end` sends it
            status="failed",
            run_id=task.run_id,
            phase=task.phase_id,
            attempt=task.attempt,
            worker=config.worker_id,
            slot=slot,
            branch=task.branch,
            push_ref=task.push_ref,
            log=str(self.log_path),
        )
        self.sessions = SessionHomes(config.work_dir / "sessions", task.run_id, task.phase_id)
        self.checkpoints: Checkpoints | None = None  # once the checkout is prepared
        self._agent_ran = False
        self._restored_commit: str | None = None

    def _end(self, status: str, reason: str | None = None, **fields: Any) -> MessageOutcome:
        """The outcome, its response with every known secret masked; `fields` are more
        of the response's (a name it does not have is a TypeError)."""
        if self.control.stopped and status != "done":
            status = "cancelled"
            reason = self.control.reason if self.control.reason != SHUTDOWN else reason
        if self._agent_ran:
            self._keep_work(status)
        self.response = replace(
            self.response, status=status, reason=reason, durations=self.clock.report(), **fields
        )
        response = redact_tree(self.response.to_dict(), self.redact)
        return MessageOutcome(status, response, None if reason is None else self.redact(reason))

    def run(self) -> MessageOutcome:
        try:
            return self._run()
        finally:
            remove_tree(self.scratch)

    def _wraps(self, workspace: Workspace, checkout: Path) -> tuple[Wrap | None, Wrap | None]:
        """The sandbox of the agent and that of the verify commands (no network when the
        spec says so); (None, None) on a trusted host."""
        remove_tree(self.scratch)
        self.scratch.mkdir(mode=0o700, parents=True)
        if self.sandbox is None:
            return None, None
        jail = Jail(
            checkout=checkout,
            scratch=self.scratch,
            git_dir=workspace.repo_path / "worktrees" / self.slot,
            shared_clone=workspace.repo_path,
        )
        return (
            self.sandbox.wrapper(jail),
            self.sandbox.wrapper(replace(jail, network=self.task.verify_network)),
        )

    def _account_env(self, backend: str, task: PhaseTask) -> dict[str, str]:
        """CLAUDE_CONFIG_DIR for the task's account, so two Claude Code accounts on one
        host never share a login or a session. Unsandboxed (a trusted host), the
        account's own, `<claude_config_root>/<account>`; sandboxed, one per account in
        the phase's kept HOME: a directory the agent can write and later phases of other
        runs read (settings, hooks, a login) would carry one phase's doing into the next."""
        account = task.agent.get("account")
        if backend != "claude-code" or not isinstance(account, str):
            return {}
        if self.sandbox is not None:
            path = self.scratch / "home" / ".claude-accounts" / account
        elif self.config.claude_config_root is not None:
            path = self.config.claude_config_root / account
        else:
            return {}
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {"CLAUDE_CONFIG_DIR": str(path)}

    def _run(self) -> MessageOutcome:  # noqa: PLR0911  one early return per way an attempt fails
        task = self.task
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            workspace = Workspace(
                workspace_root(self.config.work_dir, task.repo_url),
                task.repo_url,
                author_name=self.config.git_author_name,
                author_email=self.config.git_author_email,
            )
            prepared = workspace.prepare(
                self.slot,
                task.branch,
                task.base_branch,
                task.prerequisites,
                keep_conflicts=task.resolve_conflicts,
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
        self.response = replace(
            self.response, base_commit=prepared.base_commit, merged=tuple(prepared.merged)
        )
        checkpoints = self.checkpoints = Checkpoints(
            workspace,
            prepared,
            task.checkpoint_ref,
            self.secrets,
            f"{task.phase_id} ({task.run_id}, attempt {task.attempt})",
        )
        restored = self._restore(workspace, prepared)
        self.clock.mark("restore")

        agent_wrap, verify_wrap = self._wraps(workspace, prepared.path)
        try:
            backend, request = request_for_task(
                task,
                checkout=prepared.path,
                log_path=self.log_path,
                credential_file=account_credential(self.config, task.agent.get("account")),
                cancel=self.control.event,
            )
        except UsageError as exc:
            return self._end("failed", str(exc))
        feedback = task.feedback
        resume = resumes_here(
            feedback, self.config.worker_id, self.slot, backend, task.agent.get("account"),
            restored=restored is not None,
        )  # fmt: skip
        request = replace(
            request,
            wrap=agent_wrap,
            scratch=self.scratch,
            resume_session=feedback.session_id if resume and feedback else None,
            resumed_from=None if restored is None or feedback is not None else restored[0],
            conflicts=() if restored is not None else self._conflicts(prepared),
        )
        if resume:
            self.sessions.restore(self.scratch)
        request = replace(request, env={**request.env, **self._account_env(backend, task)})
        # Sandboxed, the agent cannot reach beside its checkout; trusted, we look.
        before = self._snapshot(prepared.path) if agent_wrap is None else None
        self._agent_ran = True
        with checkpoints.every(task.checkpoint_interval_s):
            result = run_agent(backend, request, keep_logs=self.config.keep_logs)
        self.clock.mark("agent")
        self.response = replace(
            self.response,
            agent={
                key: value
                for key, value in result.to_dict().items()
                if key not in ("log_path", "result_text")
            },
            summary=(result.result_text or "")[:2000],
        )
        if result.status == "rate_limited":
            return self._end(
                "rate_limited", result.reason, rate_limit_reset=result.rate_limit_reset
            )
        if result.status != "ok":
            return self._end("failed", f"agent {result.status}: {result.reason}")

        outside = [] if before is None else writes_outside(before, self._snapshot(prepared.path))
        if outside:
            return self._end(
                "failed", "the agent wrote outside its checkout: " + ", ".join(outside[:10])
            )
        if left := conflict_markers_left(prepared.path, prepared.conflicts):
            merge = prepared.conflicts[0]
            return self._end(
                "conflict",
                "the agent left conflict markers in " + ", ".join(left[:10]),
                conflict={k: merge[k] for k in ("phase", "branch", "commit", "conflicts")},
            )
        missing = check_deliverables(prepared.path, task.deliverables)
        if missing:
            return self._end(
                "failed",
                "deliverables missing: " + "; ".join(missing),
                missing=tuple(missing),
            )
        ignored = workspace.ignored(prepared, [d for d in task.deliverables if not _is_glob(d)])
        if ignored:
            return self._end(
                "failed",
                "deliverables ignored by git (they would not be pushed): " + ", ".join(ignored),
            )
        results = run_verify(
            prepared.path,
            task.verify,
            task.verify_timeout_s,
            self.log_path,
            secrets=self.secrets,
            wrap=verify_wrap,
        )
        self.clock.mark("verify")
        self.response = replace(self.response, verify=tuple(results))
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
        return self._commit_and_push(workspace, prepared)

    def _commit_and_push(self, workspace: Workspace, prepared: Prepared) -> MessageOutcome:
        """Commit as the worker and push, unless the change holds a secret (then nothing
        is committed; the reason names the files, never the secret)."""
        task = self.task
        try:
            leaks = secrets_in_files(prepared.path, workspace.changed_files(prepared), self.secrets)
            if leaks:
                return self._end(
                    "failed",
                    "the change holds a secret, so nothing was committed or pushed: "
                    + ", ".join(leaks[:10]),
                    secrets_found=tuple(leak.partition(" (")[0] for leak in leaks),
                )
            head = workspace.commit_all(
                prepared,
                f"superagent: {task.phase_id} ({task.run_id}, attempt {task.attempt})",
                after=self._restored_commit,
            )
            if head == prepared.head:
                return self._end("failed", "the agent changed nothing in the checkout")
            pushed = workspace.push(prepared, task.push_ref)
        except SuperagentError as exc:
            self.clock.mark("push")
            return self._end("failed", f"commit or push failed: {exc}")
        self.clock.mark("push")
        return self._end("done", None, commit=pushed)

    def _keep_work(self, status: str) -> None:
        """An unfinished attempt's work is pushed aside for the attempt after it, and its
        session kept on this machine; a finished one's session is dropped."""
        if status == "done":
            self.sessions.drop()
            return
        if self.checkpoints is not None:
            self.checkpoints.save(status)
            self.response = replace(self.response, checkpoint=self.checkpoints.to_dict())
        if self.sandbox is not None:
            try:
                self.sessions.keep(self.scratch)
            except OSError as exc:
                self.response = replace(self.response, session_kept=f"not kept: {exc.strerror}")

    def _restore(self, workspace: Workspace, prepared: Prepared) -> tuple[str, str] | None:
        """Start from the newest checkpoint offered that exists and applies to this
        checkout; (ref, commit), or None for a start from the prepared commit."""
        self.sessions.prune()
        for ref in self.task.resume_refs:
            try:
                commit = workspace.restore(prepared, ref)
            except SuperagentError as exc:
                errors = (*self.response.resume_errors, f"{ref}: {exc}"[:300])
                self.response = replace(self.response, resume_errors=errors)
                continue
            if commit is not None:
                self._restored_commit = commit
                self.response = replace(self.response, resumed_from={"ref": ref, "commit": commit})
                return ref, commit
        return None

    def _conflicts(self, prepared: Prepared) -> tuple[Conflict, ...]:
        tasks = {p.phase: p.task for p in self.task.prerequisites}
        return tuple(
            Conflict(
                phase=m["phase"],
                files=tuple(m["conflicts"]),
                task=tasks.get(m["phase"], ""),
                ours_diff=m.get("ours_diff", ""),
                theirs_diff=m.get("theirs_diff", ""),
            )
            for m in prepared.conflicts
        )

    def _snapshot(self, checkout: Path) -> Snapshot:
        """The work directory at any depth and the worker's sensitive home files; not
        the scratch directories of the slots or the free-form tasks' directories."""
        home = Path.home()
        return snapshot(
            self.config.work_dir,
            checkout,
            ignore=[self.scratch.parent, self.config.work_dir / FREEFORM_DIR],
            also=[home / name for name in HOME_SENSITIVE],
        )
