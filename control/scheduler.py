"""Which ready phase goes to which worker: pure functions, no I/O, no clock.

The orchestrator calls `assign` on every tick and the planner calls the very same
function inside its simulation, so what `control plan` predicts is what a run does.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence, Set
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class ReadyPhase:
    """A phase whose prerequisites are done and that no worker is running yet.

    `priority` is its bottom level: the minutes from its start to the end of the
    project along the longest chain of dependents (control.dag.Dag.bottom_levels);
    `minutes` its own estimate.
    """

    id: str
    requires: frozenset[str] = frozenset()
    pin: str | None = None
    priority: float = 0.0
    depends_on: frozenset[str] = frozenset()
    minutes: float = 0.0

    @property
    def tail(self) -> float:
        """The longest chain of work that must follow this phase once it ends."""
        return self.priority - self.minutes


@dataclass(frozen=True)
class WorkerState:
    """A worker as the scheduler sees it at one moment.

    `holds` are the phases built (or checked out) there: a phase whose prerequisites
    a worker holds starts from a warm checkout on it. Any set works; it is only read.
    `slots` is its capacity (free or not); 0 means "as many as are free".
    """

    name: str
    capabilities: frozenset[str]
    free_slots: int
    holds: Set[str] = field(default_factory=frozenset)
    slots: int = 0

    @property
    def capacity(self) -> int:
        return max(self.slots, self.free_slots, 1)


class Assignment(NamedTuple):
    phase_id: str
    worker: str


def can_run(phase: ReadyPhase, worker: WorkerState) -> bool:
    """Whether `worker` may ever take `phase`: it has every capability, and the pin allows it."""
    return (phase.pin is None or phase.pin == worker.name) and phase.requires <= worker.capabilities


def assign(ready: Sequence[ReadyPhase], workers: Sequence[WorkerState]) -> list[Assignment]:
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
            supply[label] = supply.get(label, 0) + worker.capacity
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
            wanted += pinned.get(worker.name, 0.0) / worker.capacity
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


def assign_first_free(
    ready: Sequence[ReadyPhase], workers: Sequence[WorkerState]
) -> list[Assignment]:
    """The baseline: each phase, in the order it became ready, to the first free capable worker.

    This is "whichever is free", the policy superagent's predecessor used; the
    benchmark measures `assign` against it. Capabilities and pins still hold.
    """
    free = {w.name: w.free_slots for w in workers}
    chosen: list[Assignment] = []
    for phase in ready:
        for worker in workers:
            if free[worker.name] > 0 and can_run(phase, worker):
                free[worker.name] -= 1
                chosen.append(Assignment(phase.id, worker.name))
                break
    return chosen


def unrunnable(phases: Collection[ReadyPhase], workers: Sequence[WorkerState]) -> list[str]:
    """Ids of phases that no worker could ever take (missing capability or pin)."""
    return [p.id for p in phases if not any(can_run(p, w) for w in workers)]
