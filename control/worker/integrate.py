"""The final check of a run, on a worker: merge, verify once per command, push.

It runs where a phase runs and as a phase's checks do (a slot's checkout, the
same verify runner), because the merged tree is repository content written by
agents: a `conftest.py` or a delivered script must never run on the control
plane. The orchestrator only checks the pushed branch on the remote.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from control.checkset import failed_phases
from control.errors import SuperagentError
from control.git import MergeConflict, Workspace, remove_tree, workspace_root
from control.messages import (
    CheckResult,
    IntegrationCheck,
    IntegrationResult,
    IntegrationTask,
    PrerequisiteRef,
)
from control.process import Redactor, Wrap
from control.queue import Claimed
from control.verify import run_verify
from control.worker.config import WorkerConfig
from control.worker.contract import SHUTDOWN, MessageOutcome, RunControl
from control.worker.logs import log_path_for
from control.worker.sandbox import Jail, Sandbox
from control.worker.secrets import known_secrets, redact_tree


def run_integration(
    config: WorkerConfig,
    task: IntegrationTask,
    claimed: Claimed,
    control: RunControl,
    slot: str,
    sandbox: Sandbox | None = None,
) -> MessageOutcome:
    """Do `task` in `slot`; the outcome's response is an `IntegrationResult` as a dict.
    The checks run in `sandbox` as a phase's verify commands do (None: a trusted host)."""
    log_path = log_path_for(config.logs_dir, claimed.id, "integration", task.attempt)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    control.log_path = str(log_path)
    base = IntegrationResult(
        status="failed",
        run_id=task.run_id,
        attempt=task.attempt,
        branch=task.branch,
        worker=config.worker_id,
        log=str(log_path),
    )

    secrets = known_secrets(config)
    redact = Redactor(secrets)

    def end(status: str, reason: str | None = None, **fields: Any) -> MessageOutcome:
        """The outcome, with every known secret masked, as a phase's response is."""
        if control.stopped and status != "done":
            status = "cancelled"
            reason = control.reason if control.reason != SHUTDOWN else reason
        if reason is not None:
            reason = redact(reason)
        result = replace(base, status=status, reason=reason, **fields)
        return MessageOutcome(status, redact_tree(result.to_dict(), redact), reason)

    workspace = Workspace(
        workspace_root(config.work_dir, task.repo_url),
        task.repo_url,
        author_name=config.git_author_name,
        author_email=config.git_author_email,
    )
    order = [PrerequisiteRef(p.phase, p.branch, p.commit) for p in task.phases]
    try:
        prepared = workspace.prepare(slot, task.branch, task.base_branch, order)
    except MergeConflict as exc:
        return end(
            "conflict",
            f"phase {exc.phase!r} does not merge onto the phases before it: "
            f"conflicts in {', '.join(exc.files) or '(git named no files)'}",
            conflict=exc.to_dict(),
        )
    except SuperagentError as exc:
        return end("failed", f"merging the phases failed: {exc}")
    merged = tuple(m["phase"] for m in prepared.merged)
    scratch = config.work_dir / "scratch" / slot
    remove_tree(scratch)
    scratch.mkdir(mode=0o700, parents=True)
    wrap = None
    if sandbox is not None:
        wrap = sandbox.wrapper(
            Jail(
                checkout=prepared.path,
                scratch=scratch,
                git_dir=workspace.repo_path / "worktrees" / slot,
                shared_clone=workspace.repo_path,
            )
        )
    try:
        checks = _run_checks(task, prepared.path, log_path, control, wrap, secrets)
    finally:
        remove_tree(scratch)
    if control.stopped:
        return end("cancelled", control.reason, merged=merged, checks=checks)
    failed = [c for c in checks if not c.ok and c.part_of is None]
    if failed:
        phases = failed_phases(checks)
        first = failed[0]
        return end(
            "failed",
            f"the integrated tree fails {len(failed)} check(s) of phase(s) {', '.join(phases)}; "
            f"first: {first.command} (exit {first.exit_code}"
            f"{', timed out' if first.timed_out else ''})",
            merged=merged,
            checks=checks,
            failed_phases=phases,
            base_commit=prepared.base_commit,
        )
    try:
        commit = workspace.push(prepared, task.push_ref)
    except SuperagentError as exc:
        return end("failed", f"pushing to {task.push_ref} failed: {exc}", merged=merged)
    finally:
        workspace.release(slot)
    return end(
        "done",
        None,
        commit=commit,
        push_ref=task.push_ref,
        base_commit=prepared.base_commit,
        merged=merged,
        checks=checks,
    )


def _run_checks(
    task: IntegrationTask,
    checkout: Path,
    log_path: Path,
    control: RunControl,
    wrap: Wrap | None,
    secrets: list[str],
) -> tuple[CheckResult, ...]:
    """Each distinct command once, with the runner a phase's verify uses, within the
    task's overall time; a merged command that fails is followed by each command it
    merged, alone, to say whose checks fail. Stops early (the rest not run) when the
    run is stopped."""
    deadline = time.monotonic() + task.timeout_s

    def run(check: IntegrationCheck, part_of: str | None = None) -> CheckResult:
        left = deadline - time.monotonic()
        if left <= 0:
            return CheckResult(check.command, check.phases, -1, "not run", 0.0, True, part_of)
        (ran,) = run_verify(
            checkout,
            [check.command],
            min(task.verify_timeout_s, left),
            log_path,
            secrets=secrets,
            wrap=wrap,
        )
        return CheckResult(
            check.command,
            check.phases,
            ran.exit_code,
            ran.output_tail,
            round(ran.duration_s, 3),
            ran.timed_out,
            part_of,
        )

    checks: list[CheckResult] = []
    for check in task.checks:
        if control.stopped:
            break
        checks.append(result := run(check))
        for part in check.parts if not result.ok else ():
            if control.stopped:
                break
            checks.append(run(part, check.command))
    return tuple(checks)
