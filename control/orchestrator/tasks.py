"""The task a phase's attempt is sent as: its prerequisites at their verified commits,
its agent (the account's), what it continues from, a replay recording as bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from control.errors import DrainedError, SuperagentError, UsageError
from control.messages import (
    PhaseTask,
    PrerequisiteRef,
    attempt_ref,
    to_b64,
    wip_ref,
)
from control.orchestrator.base import QUEUE_MAX_ATTEMPTS, log
from control.orchestrator.branches import Branches
from control.orchestrator.settle import Settling
from control.recovery import continuation
from control.spec import Phase
from control.state import AttemptRow


class Tasks(Branches, Settling):
    """Building and sending one attempt's task."""

    def _send(self, attempt: AttemptRow) -> None:
        worker = self.workers[attempt.worker]
        try:
            # Its prerequisites' branches at their accepted commits, or its worker's
            # checkout fails on a branch moved since (and the phase pays an attempt).
            self.repair_branches(self._phase(attempt.phase_id).depends_on)
        except SuperagentError as exc:
            log.warning("cannot check the branches %s builds on: %s", attempt.key, exc)
            self._say("send_failed", phase=attempt.phase_id, worker=worker.name, reason=str(exc))
            return  # still `sending`: tried again at the next tick
        try:
            payload = self.build_task(attempt).to_payload()
        except (SuperagentError, OSError, ValueError) as exc:
            # Nothing a retry can mend (a recording that cannot be read, say): this
            # phase ends with the reason; the run and the other phases go on.
            phase = self.store.phases(self.run_id)[attempt.phase_id]
            self._fail_attempt(attempt, phase, f"cannot build the task: {exc}", final=True)
            return
        try:
            sent = self.transports.enqueue(
                worker,
                payload,
                key=attempt.key,
                max_attempts=QUEUE_MAX_ATTEMPTS,
                unless_drained=True,
            )
        except DrainedError as exc:
            # Drained between this tick's poll and the send (a rolling upgrade, an
            # operator): nothing landed, so the phase goes to another worker, unharmed.
            phase = self.store.phases(self.run_id)[attempt.phase_id]
            self._move_attempt(attempt, phase, f"not sent: {exc}", in_inbox=False)
            return
        except SuperagentError as exc:
            log.warning("enqueue of %s on %s failed: %s", attempt.key, worker.name, exc)
            self._say("send_failed", phase=attempt.phase_id, worker=worker.name, reason=str(exc))
            return
        self.store.record_dispatched(attempt, sent.id, sent.duplicate)
        self._say(
            "dispatched",
            phase=attempt.phase_id,
            worker=worker.name,
            attempt=attempt.attempt,
            duplicate=sent.duplicate,
        )

    def build_task(self, attempt: AttemptRow) -> PhaseTask:
        phase = self._phase(attempt.phase_id)
        rows = self.store.phases(self.run_id)
        prerequisites = tuple(
            PrerequisiteRef(
                dep,
                rows[dep].branch,
                rows[dep].commit_sha or "",
                rows[dep].summary or "",
                self._phase(dep).task if self.spec.resolve_conflicts else "",
            )
            for dep in phase.depends_on
        )
        agent = agent_object(phase, self.agent_override)
        after = continuation(
            self.store.attempts(self.run_id, phase.id),
            attempt.attempt,
            phase.feedback_rounds,
            self.store.reopens(self.run_id, phase.id),
        )
        if attempt.reserved_usd > 0:  # the agent's own limit is what the run reserved for it
            agent["max_budget_usd"] = round(attempt.reserved_usd, 6)
        account = self.accounts.get(attempt.account or "")
        if account is not None:
            # The account decides the agent: the phase's own or one of its fallbacks.
            models = dict(phase.agent.chain())
            if account.agent != agent.get("backend"):
                agent["model"] = models.get(account.agent)
                for key in ("allowed_tools", "permission_mode", "command"):
                    agent.pop(key, None)  # Claude Code's words mean nothing to another agent
            agent = {k: v for k, v in agent.items() if v is not None}
            agent.update(backend=account.agent, account=account.name)
        replay_files: dict[str, str] = {}
        replay_patch = None
        if agent.get("backend") == "replay":
            replay_files, replay_patch = self._recording(phase.id, after.feedback is not None)
        return PhaseTask(
            run_id=self.run_id,
            phase_id=phase.id,
            attempt=attempt.attempt,
            title=phase.title,
            task=phase.task,
            branch=rows[phase.id].branch,
            repo_url=self.repo_url,
            base_branch=self.spec.repo.base_branch,
            deliverables=phase.deliverables,
            verify=phase.verify,
            prerequisites=prerequisites,
            agent=agent,
            timeout_s=phase.timeout_minutes * 60,
            silence_s=phase.silence_minutes * 60,
            verify_timeout_s=min(phase.timeout_minutes * 60, 1800.0),
            verify_network=phase.verify_network,
            project=self.spec.name,
            replay_files_b64=replay_files,
            replay_patch_b64=replay_patch,
            push_ref=attempt.push_ref or attempt_ref(self.run_id, phase.id, attempt.attempt),
            feedback=after.feedback,
            resume_refs=after.resume_refs,
            checkpoint_ref=wip_ref(self.run_id, phase.id, attempt.attempt),
            checkpoint_interval_s=phase.checkpoint_minutes * 60,
            resolve_conflicts=self.spec.resolve_conflicts,
        )

    def _recording(
        self, phase_id: str, feedback: bool = False
    ) -> tuple[dict[str, str], str | None]:
        """The replay recording of a phase (`files/` and a patch), shipped in the message
        as the bytes they are (base64): CRLF and non-UTF-8 files arrive exactly. An
        attempt told what failed gets `<phase>/feedback/` when there is one: what the
        recorded agent did once it was told."""
        if self.replay_dir is None:
            raise UsageError("the replay agent needs --replay-dir (recordings per phase)")
        root = self.replay_dir / phase_id
        if not root.is_dir():
            raise UsageError(f"no replay recording for phase {phase_id!r} in {self.replay_dir}")
        if feedback and (root / "feedback").is_dir():
            root = root / "feedback"
        files = {
            str(path.relative_to(root / "files")): to_b64(path.read_bytes())
            for path in sorted((root / "files").rglob("*"))
            if path.is_file() and not path.is_symlink()
        }
        patch = next(
            (
                to_b64(p.read_bytes())
                for p in (root / f"{phase_id}.patch", root / "changes.patch")
                if p.is_file()
            ),
            None,
        )
        return files, patch


def agent_object(phase: Phase, override: Mapping[str, Any]) -> dict[str, Any]:
    """A phase's agent as the task carries it, the unset options left out, with the
    operator's `--agent` over it (before the account's say)."""
    agent = {k: v for k, v in phase.agent.to_dict().items() if v not in (None, (), [])}
    agent.update(override)
    return agent
