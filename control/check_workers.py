"""Which live worker runs a check of merged phases (the merge queue's, the final one), and
whether one has a slot to spare: read from the fleet's state, never from the repository."""

from __future__ import annotations

from control.inventory import Worker
from control.orchestrator import Orchestrator, busy_slots, ready_now
from control.spec import Spec


def needs(spec: Spec, verify: bool) -> frozenset[str]:
    """The capabilities the checks may need: those of every phase that has checks."""
    if not verify:
        return frozenset()
    return frozenset(c for p in spec.phases if p.verify for c in p.requires)


def pick(orchestrator: Orchestrator, wanted: frozenset[str]) -> Worker | None:
    """A live worker for the check: the one with most of the `wanted` capabilities, then
    the most free slots. None when no worker is up."""
    busy = busy_slots(orchestrator.store.phases(orchestrator.run_id).values())
    up = orchestrator.up_workers()
    if not up:
        return None
    return max(
        up, key=lambda w: (len(wanted & w.capabilities), w.slots - busy.get(w.name, 0), w.name)
    )


def spare_slot(orchestrator: Orchestrator) -> bool:
    """During the run: whether a live worker has a slot that no phase ready to go wants,
    so a check of a merged state delays no phase (ready and busy as the dispatcher
    counts them: `control.orchestrator.readiness`)."""
    phases = orchestrator.store.phases(orchestrator.run_id)
    ready = ready_now(orchestrator.dag, phases, orchestrator.clock())
    busy = busy_slots(phases.values())
    free = sum(max(0, w.slots - busy.get(w.name, 0)) for w in orchestrator.up_workers())
    return free > len(ready)


def is_down(orchestrator: Orchestrator, name: str) -> bool:
    row = orchestrator.store.workers().get(name)
    return name not in orchestrator.workers or (row is not None and row.status == "down")


def nobody_up(orchestrator: Orchestrator) -> str:
    """Why no worker can run the check: each worker of the inventory and its state."""
    rows = orchestrator.store.workers()
    why = "; ".join(
        f"{name}: {(rows[name].reason or rows[name].status) if name in rows else 'not seen'}"
        for name in sorted(orchestrator.workers)
    )
    return (
        f"no worker is up to run the final check of run {orchestrator.run_id} "
        f"(it runs on a worker, never here): {why or 'the inventory has no worker'}"
    )
