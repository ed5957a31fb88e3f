"""A free-form task (`control enqueue HOST`) on a worker: the agent alone in a scratch
directory, answered with a `PhaseResponse` as a phase is."""

from __future__ import annotations

from dataclasses import replace

from control.errors import UsageError
from control.messages import FreeformTask, PhaseResponse, PhaseTask
from control.queue import Claimed
from control.worker.agents import request_for_task, run_agent
from control.worker.agents.base import DEFAULT_SILENCE_TIMEOUT_S, DEFAULT_WALL_TIMEOUT_S
from control.worker.config import WorkerConfig
from control.worker.contract import MessageOutcome, RunControl
from control.worker.logs import log_path_for
from control.worker.sandbox import Jail, Sandbox

FREEFORM_DIR = "freeform"  # under the work directory: one scratch directory per free-form task


def run_freeform(
    config: WorkerConfig, claimed: Claimed, control: RunControl, sandbox: Sandbox | None
) -> MessageOutcome:
    """A free-form task (`control enqueue HOST`): the agent in a scratch directory.
    Its prompt is a phase's with no repository, deliverable or check."""
    try:
        freeform = FreeformTask.from_payload(claimed.payload)
    except UsageError as exc:
        return MessageOutcome.refused(config.worker_id, str(exc))
    scratch = config.work_dir / FREEFORM_DIR / str(claimed.id)
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    wrap = sandbox.wrapper(Jail(checkout=scratch, scratch=scratch)) if sandbox else None
    log = log_path_for(config.logs_dir, claimed.id, "freeform", claimed.attempt)
    control.log_path = str(log)
    phase = PhaseTask(
        run_id="freeform", phase_id="freeform", attempt=claimed.attempt,
        title="free-form task", task=freeform.text, branch="", repo_url="",
        base_branch="", deliverables=(), agent=freeform.agent,
        timeout_s=DEFAULT_WALL_TIMEOUT_S, silence_s=DEFAULT_SILENCE_TIMEOUT_S,
    )  # fmt: skip
    try:
        backend, request = request_for_task(
            phase, checkout=scratch, log_path=log, credential_file=config.credential_file,
            cancel=control.event,
        )  # fmt: skip
        request = replace(request, wrap=wrap, scratch=scratch if wrap else None)
        result = run_agent(backend, request, keep_logs=config.keep_logs)
    except UsageError as exc:
        return MessageOutcome.refused(config.worker_id, str(exc))
    status = {"ok": "done", "rate_limited": "rate_limited", "cancelled": "cancelled"}.get(
        result.status, "failed"
    )
    reason = None if status == "done" else result.reason
    response = PhaseResponse(
        status=status,
        reason=reason,
        worker=config.worker_id,
        summary=(result.result_text or "")[:4000],
        agent={k: v for k, v in result.to_dict().items() if k != "result_text"},
        log=str(log),
        directory=str(scratch),
    )
    return MessageOutcome(status, response.to_dict(), reason)
