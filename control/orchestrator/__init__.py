"""The run loop: from a validated spec to pushed, verified branches across the fleet.

Each tick polls every worker in one fan-out per transport, stores the responses
(then acknowledges them), checks each reported branch on the remote at the
reported commit, notices workers that went quiet and reassigns their phases, and
dispatches the phases that became ready to the workers the scheduler picks. Every
decision is committed to the state database before it is acted on, so the loop
can be killed at any point and resumed.

One concern per module, mixins over `base.Base`: `liveness` (workers judged, lost work
taken back), `responses` (answers stored and believed), `settle` (the retry policy),
`tasks` (what an attempt is sent), `branches` (done branches kept at their accepted
commits), `pacing` (holds, budget, accounts), `readiness` (what is ready now, how busy
each worker is), `dispatching` (the scheduler's picks sent), `run` (the tick and the end
of the run).
"""

from control.orchestrator.base import IN_FLIGHT, QUEUE_MAX_ATTEMPTS, Emit, RunOutcome, Settings
from control.orchestrator.readiness import busy_slots, ready_now
from control.orchestrator.run import Orchestrator

__all__ = [
    "IN_FLIGHT",
    "QUEUE_MAX_ATTEMPTS",
    "Emit",
    "Orchestrator",
    "RunOutcome",
    "Settings",
    "busy_slots",
    "ready_now",
]
