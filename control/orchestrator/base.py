"""What every part of the run loop shares: its settings, its outcome, and the run it is
attached to (the spec, the fleet, the state database, the transports, the remote)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control import events
from control.accounts import Account
from control.git import Workspace, workspace_root
from control.health import (
    HEARTBEAT_TIMEOUT_S,
    PENDING_ALERT_S,
)
from control.inventory import Worker
from control.spec import Phase, Spec
from control.state import PhaseRow, StateStore
from control.transport import Transports

log = logging.getLogger("superagent.orchestrator")


IN_FLIGHT = ("sending", "dispatched")


QUEUE_MAX_ATTEMPTS = 2  # lease expiries on one worker before its inbox declares the message dead


@dataclass
class Settings:
    poll_interval_s: float = 2.0
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    unreachable_polls: int = 3
    retry_backoff_s: float = 15.0
    max_backoff_s: float = 600.0
    max_concurrent: int | None = None  # agent runs across the fleet (one account's limit)
    stagger_s: float = 0.0  # at least this long between two dispatches, fleet-wide
    pending_alert_s: float = PENDING_ALERT_S
    rate_limit_wait_s: float = 300.0  # when a rate-limited agent does not say until when
    git_timeout_s: float = 60.0
    # An attempt still in flight this long after its phase's timeout is written off
    # (its worker lost it, or it waited behind another run's work) and reassigned.
    overdue_grace_s: float = 600.0
    # Machine losses a phase may suffer before it is dead: they never use up the
    # phase's own attempts, but a phase that kills every machine must end somewhere.
    max_losses: int = 10


@dataclass
class RunOutcome:
    run_id: str
    status: str  # done, failed
    phases: dict[str, PhaseRow]
    reason: str | None = None
    dead: dict[str, str] = field(default_factory=dict)


Emit = Callable[[str, dict[str, Any]], None]


class Base:
    """The orchestrator's state and the helpers every part uses; the parts are mixins
    over it (control.orchestrator), one concern each."""

    def __init__(
        self,
        spec: Spec,
        workers: Sequence[Worker],
        store: StateStore,
        transports: Transports,
        settings: Settings | None = None,
        *,
        repo_url: str | None = None,
        agent: dict[str, Any] | None = None,
        replay_dir: Path | None = None,
        work_dir: Path | None = None,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.time,
        accounts: Sequence[Account] = (),
    ) -> None:
        self.spec = spec
        self.accounts = {a.name: a for a in accounts}
        self.workers = {w.name: w for w in workers}
        self.store = store
        self.transports = transports
        self.settings = settings or Settings()
        self.repo_url = repo_url or spec.repo.url
        self.agent_override = agent or {}
        self.replay_dir = replay_dir
        # The orchestrator's own clone: it checks pushed branches and builds the merge.
        self.work_dir = work_dir or store.path.parent / "git"
        self.git = Workspace(
            workspace_root(self.work_dir, self.repo_url),
            self.repo_url,
            author_name="superagent",
            author_email="superagent@localhost",
            timeout_s=self.settings.git_timeout_s,
        )
        self.emit: Emit = emit or (lambda kind, data: None)
        self.clock = clock
        self.dag = spec.dag()
        self.bottom = self.dag.bottom_levels()
        self.run_id = ""
        self._last_dispatch = 0.0
        self._first_seen: dict[str, float] = {}
        self._stuck: dict[str, str | None] = {}
        self._pins: dict[str, str] | None = None  # the run's own, read every tick
        # Why the run cannot go on within its budget (set by `_dispatch` when a ready
        # phase does not fit and nothing is in flight that could free money): the run ends.
        self._over_budget: str | None = None

    def attach(self, run_id: str) -> None:
        self.run_id = run_id
        self._pins = self.store.run(run_id).pins

    def _phase(self, phase_id: str) -> Phase:
        return self.spec.phase(phase_id)

    def say(self, kind: str, **data: Any) -> None:
        """Tell the log and the terminal; the kinds no state change writes go to the
        event stream here, the others were written with their change (once each)."""
        log.info("%s %s", kind, data)
        if events.written_by(kind) == "orchestrator":
            detail = {k: v for k, v in data.items() if k not in ("run", "phase", "worker")}
            self.store.event(
                data.get("run") or self.run_id or None,
                kind,
                data.get("phase"),
                data.get("worker"),
                detail,
            )
        self.emit(kind, data)

    _say = say
