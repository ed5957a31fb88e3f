"""The scheduler as it was before it weighed remaining work and contention (2026-11-29).

Kept unchanged as the benchmark's reference: `make bench-schedule` reports it under the
same contention model as `control.scheduler.assign`, so the gain is measured, not claimed.
Rarity is judged on the ready set only, and a warm checkout outranks an idle machine.
"""

from __future__ import annotations

from collections.abc import Sequence

from control.scheduler import Assignment, ReadyPhase, WorkerState, can_run


def assign_before_contention(
    ready: Sequence[ReadyPhase], workers: Sequence[WorkerState], outlook: object = None
) -> list[Assignment]:
    """Decide which ready phases start now, and where.

    Phases go by priority: the longest remaining chain first, since any delay to it
    delays the end (among equals, the phase fewer workers can take). Each goes to a
    free worker that can run it, preferring, in order:

    1. the worker whose other capabilities the ready phases want least (work that
       needs a capability, over the slots that have it; the same for pins), so a
       rare machine stays free for the phases only it can do;
    2. the worker holding most of the phase's prerequisites (a warm checkout);
    3. the worker with the most free slots, then the order given.

    One exception to priority order: when a phase would take the last free slot of a
    worker that is the only free one a lower-priority phase can use, the other goes
    first if the chain that must follow it is longer (its tail, priority minus its
    own minutes). Taking the slot would delay that chain by the whole phase, while
    yielding delays the first one by the other's (shorter) run at most.
    A phase that no free worker can take waits for the next call.
    """
    free = {w.name: w.free_slots for w in workers}
    if not ready or not any(n > 0 for n in free.values()):
        return []
    eligible = {p.id: [w for w in workers if can_run(p, w)] for p in ready}
    supply: dict[str, int] = {}
    for worker in workers:
        for label in worker.capabilities:
            supply[label] = supply.get(label, 0) + _capacity(worker)
    demand: dict[str, float] = {}
    pinned: dict[str, float] = {}
    for phase in ready:
        weight = phase.minutes if phase.minutes > 0 else 1.0  # no estimate: count phases
        for label in phase.requires:
            demand[label] = demand.get(label, 0.0) + weight
        if phase.pin is not None:
            pinned[phase.pin] = pinned.get(phase.pin, 0.0) + weight
    position = {w.name: i for i, w in enumerate(workers)}

    def cost(phase: ReadyPhase, worker: WorkerState) -> float:
        """How much the other ready phases want what `phase` would leave unused on `worker`."""
        wanted = sum(demand.get(c, 0.0) / supply[c] for c in worker.capabilities - phase.requires)
        if phase.pin != worker.name:
            wanted += pinned.get(worker.name, 0.0) / _capacity(worker)
        return wanted

    def best_for(phase: ReadyPhase) -> WorkerState | None:
        candidates = [w for w in eligible[phase.id] if free[w.name] > 0]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda w: (
                cost(phase, w),
                -len(phase.depends_on & w.holds),
                -free[w.name],
                position[w.name],
            ),
        )

    def only_hope(phase: ReadyPhase, worker: WorkerState) -> bool:
        """Whether `worker` is the one free worker `phase` could start on."""
        free_ones = [w for w in eligible[phase.id] if free[w.name] > 0]
        return len(free_ones) == 1 and free_ones[0].name == worker.name

    order = sorted(ready, key=lambda p: (-p.priority, len(eligible[p.id])))
    placed: set[str] = set()
    chosen: list[Assignment] = []

    def place(phase: ReadyPhase, worker: WorkerState) -> None:
        free[worker.name] -= 1
        placed.add(phase.id)
        chosen.append(Assignment(phase.id, worker.name))

    for phase in order:
        if phase.id in placed:
            continue
        best = best_for(phase)
        while best is not None and free[best.name] == 1:
            rivals = [
                q for q in order if q.id not in placed and q is not phase and only_hope(q, best)
            ]
            rival = max(rivals, key=lambda q: q.tail, default=None)
            if rival is None or rival.tail <= phase.tail:
                break
            place(rival, best)
            best = best_for(phase)
        if best is not None:
            place(phase, best)
    return chosen


def _capacity(worker: WorkerState) -> int:
    return max(worker.slots, worker.free_slots, 1)
