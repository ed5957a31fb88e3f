"""The seam between the worker daemon (the host) and what runs a claimed message (the
executor): how the daemon tells a run to stop and why, and what a run gives back.

Both sides import this module and neither imports the other, so an executor can be
run and tested without a daemon (an import-linter contract keeps it that way).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.messages import PhaseResponse
from control.queue import Claimed

# Why the daemon stopped a run (`RunControl.reason`).
CANCELLED, SHUTDOWN, LEASE_LOST = "cancelled on request", "worker shutting down", "lease lost"
DRAINED_NOW = "worker drained --now"


class RunControl:
    """How the daemon tells a running message to stop, and why."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None
        self.log_path: str | None = None  # set by the executor: `control logs` reads it

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


@dataclass(frozen=True)
class MessageOutcome:
    """What running a message produced: `done` or a failure status, and the response
    (a `PhaseResponse` or an `IntegrationResult`, as its `to_dict()`)."""

    status: str
    response: dict[str, Any]
    reason: str | None = None

    @classmethod
    def refused(cls, worker: str, reason: str) -> MessageOutcome:
        """A message that could not be run at all (not understood, no sandbox, a crash):
        failed, saying why."""
        answer = PhaseResponse(status="failed", reason=reason, worker=worker)
        return cls("failed", answer.to_dict(), reason)


Executor = Callable[[Claimed, RunControl, str], MessageOutcome]  # (message, control, slot name)
