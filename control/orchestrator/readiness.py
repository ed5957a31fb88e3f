"""What is ready to go now and how busy each worker is, read from a run's phase rows.

The dispatcher (`dispatching`) sends what is ready now to the free slots, and the check
driver (`control.check_workers.spare_slot`) runs a merge-queue check only on a slot that
nothing ready now wants: both read these, so they never disagree about either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from control.dag import Dag
from control.orchestrator.base import IN_FLIGHT
from control.state import PhaseRow


def progress(phases: Mapping[str, PhaseRow]) -> tuple[set[str], set[str]]:
    """The phases done, and those started and not done (in flight, or ended for good):
    neither kind is dispatched."""
    done = {p for p, row in phases.items() if row.state == "done"}
    started = {p for p, row in phases.items() if row.state not in ("waiting", "done")}
    return done, started


def ready_now(
    dag: Dag,
    phases: Mapping[str, PhaseRow],
    now: float,
    progressed: tuple[set[str], set[str]] | None = None,
) -> list[str]:
    """The phases ready to go at `now`, in the DAG's order: waiting, every prerequisite
    done, and not held back (`not_before`: a retry's backoff, a rate limit's reset).
    `progressed`: these phases' `progress`, when the caller has read it already."""
    done, started = progressed if progressed is not None else progress(phases)
    return [p for p in dag.ready(done, running=started) if (phases[p].not_before or 0.0) <= now]


def busy_slots(phases: Iterable[PhaseRow]) -> dict[str, int]:
    """Per worker, the slots its phases in flight take (one each)."""
    busy: dict[str, int] = {}
    for row in phases:
        if row.state in IN_FLIGHT and row.worker:
            busy[row.worker] = busy.get(row.worker, 0) + 1
    return busy
