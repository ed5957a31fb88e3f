"""The orchestrator's state database: runs, phases, attempts, workers and every event.

What the orchestrator decides is committed here before it acts on it (a dispatch is
recorded as `sending` before the enqueue, a response is stored before it is
acknowledged on the worker), so a killed orchestrator resumes where it was, with
nothing dispatched twice and nothing lost.
"""

from control.state.rows import AttemptRow, IntegrationRow, PhaseRow, ReopenRow, RunRow
from control.state.store import StateStore

__all__ = ["AttemptRow", "IntegrationRow", "PhaseRow", "ReopenRow", "RunRow", "StateStore"]
