"""What a run will cost in time, before it starts: waves, critical path, makespan, lower bound.

The makespan comes from a discrete-event simulation that drives the real scheduler
with the estimates; the lower bound says how far any schedule could improve on it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from control.dag import Dag
from control.errors import UsageError
from control.inventory import Worker, generic_workers
from control.scheduler import Assignment, ReadyPhase, WorkerState, assign, can_run
from control.spec import Spec

Policy = Callable[[Sequence[ReadyPhase], Sequence[WorkerState]], list[Assignment]]
# How many what-if fleet sizes `plan` simulates at most.
MAX_SWEEP = 12


@dataclass(frozen=True)
class Work:
    """A phase as the planner needs it: its duration, prerequisites, needs and pin."""

    id: str
    minutes: float
    depends_on: tuple[str, ...] = ()
    requires: frozenset[str] = frozenset()
    pin: str | None = None


@dataclass(frozen=True)
class Run:
    """One phase in the simulated schedule."""

    phase: str
    worker: str
    start: float
    end: float


@dataclass(frozen=True)
class Simulation:
    makespan: float
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class LowerBound:
    """No schedule on this fleet finishes sooner than `minutes`, the largest of the terms.

    `capabilities[c]` is the work that needs c over the slots of the workers that
    have it. `groups[names]` is the work that only those workers can do (capabilities
    and pins together) over their slots: the same idea, exact when one machine is the
    only one for several capabilities at once.
    """

    minutes: float
    binding: str
    critical_path: float
    work_per_slot: float
    capabilities: dict[str, float] = field(default_factory=dict)
    groups: dict[str, float] = field(default_factory=dict)

    @property
    def basic(self) -> float:
        """The bound without `groups`: critical path, work per slot, work per capability."""
        return max(self.critical_path, self.work_per_slot, *self.capabilities.values())


def works_from_spec(spec: Spec, honour_pins: bool = True) -> list[Work]:
    return [
        Work(
            p.id,
            p.estimate_minutes,
            p.depends_on,
            frozenset(p.requires),
            p.worker if honour_pins else None,
        )
        for p in spec.phases
    ]


def _dag(works: Sequence[Work]) -> Dag:
    return Dag({w.id: w.depends_on for w in works}, {w.id: w.minutes for w in works})


def _check_runnable(works: Sequence[Work], workers: Sequence[Worker]) -> None:
    if not workers:
        raise UsageError("no workers to plan for")
    states = [WorkerState(w.name, w.capabilities, w.slots) for w in workers]
    for work in works:
        phase = ReadyPhase(work.id, work.requires, work.pin)
        if not any(can_run(phase, s) for s in states):
            needs = ", ".join(sorted(work.requires)) or "nothing"
            pin = f" on worker {work.pin!r}" if work.pin else ""
            raise UsageError(
                f"phase {work.id!r} can run on no worker of this fleet (it needs {needs}{pin})"
            )


def simulate(
    works: Sequence[Work],
    workers: Sequence[Worker],
    policy: Policy = assign,
    dag: Dag | None = None,
) -> Simulation:
    """Run the schedule in simulated time: each phase takes exactly its estimate.

    At time 0 and whenever phases finish, the policy sees the ready phases (in the
    order they became ready) and the workers' free slots and holdings, exactly as
    the orchestrator will show them, and its assignments start at once.
    """
    _check_runnable(works, workers)
    graph = dag or _dag(works)
    by_id = {w.id: w for w in works}
    priority = graph.bottom_levels()
    waiting = {w.id: len(set(w.depends_on)) for w in works}

    def ready_phase(work: Work) -> ReadyPhase:
        deps = frozenset(work.depends_on)
        return ReadyPhase(work.id, work.requires, work.pin, priority[work.id], deps, work.minutes)

    ready = [ready_phase(w) for w in works if waiting[w.id] == 0]
    free = {w.name: w.slots for w in workers}
    holds: dict[str, set[str]] = {w.name: set() for w in workers}
    events: list[tuple[float, int, str, str]] = []
    runs: list[Run] = []
    now = 0.0
    sequence = 0
    while ready or events:
        if ready and any(free.values()):
            states = [
                WorkerState(w.name, w.capabilities, free[w.name], holds[w.name], w.slots)
                for w in workers
            ]
            started = {a.phase_id: a.worker for a in policy(ready, states)}
            for phase_id, worker in started.items():
                free[worker] -= 1
                end = now + by_id[phase_id].minutes
                heapq.heappush(events, (end, sequence, phase_id, worker))
                sequence += 1
                runs.append(Run(phase_id, worker, now, end))
            ready = [p for p in ready if p.id not in started]
        if not events:
            if ready:  # nothing running, nothing startable: the policy is stuck
                raise UsageError(f"the scheduler assigned none of {', '.join(p.id for p in ready)}")
            break
        now = events[0][0]
        while events and events[0][0] <= now:
            _, _, phase_id, worker = heapq.heappop(events)
            free[worker] += 1
            holds[worker].add(phase_id)
            for child in graph.dependents[phase_id]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(ready_phase(by_id[child]))
    makespan = max((r.end for r in runs), default=0.0)
    return Simulation(makespan, tuple(runs))


def lower_bound(
    works: Sequence[Work], workers: Sequence[Worker], dag: Dag | None = None
) -> LowerBound:
    """The largest of: the critical path, total work / all slots, for each capability
    the work that needs it / the slots that have it, and for each set of workers that
    is all some phase can use, the work only that set can do / its slots."""
    _check_runnable(works, workers)
    graph = dag or _dag(works)
    critical = graph.critical_path().minutes
    slots = sum(w.slots for w in workers)
    per_slot = sum(w.minutes for w in works) / slots
    per_capability: dict[str, float] = {}
    for label in sorted({c for w in works for c in w.requires}):
        need = sum(w.minutes for w in works if label in w.requires)
        have = sum(w.slots for w in workers if label in w.capabilities)
        per_capability[label] = need / have
    states = [WorkerState(w.name, w.capabilities, w.slots) for w in workers]
    slots_of = {w.name: w.slots for w in workers}
    able = [
        (
            frozenset(s.name for s in states if can_run(ReadyPhase(w.id, w.requires, w.pin), s)),
            w.minutes,
        )
        for w in works
    ]
    everyone = frozenset(slots_of)
    per_group: dict[str, float] = {}
    for group in sorted({a for a, _ in able if a != everyone}, key=sorted):
        only_there = sum(minutes for a, minutes in able if a <= group)
        per_group["+".join(n for n in slots_of if n in group)] = only_there / sum(
            slots_of[n] for n in group
        )
    terms = {"critical path": critical, "total work / slots": per_slot}
    terms.update({f"work needing {c} / its slots": v for c, v in per_capability.items()})
    terms.update({f"work only {g} can do / its slots": v for g, v in per_group.items()})
    binding = max(terms, key=terms.__getitem__)
    return LowerBound(terms[binding], binding, critical, per_slot, per_capability, per_group)


@dataclass(frozen=True)
class Plan:
    """Everything `control plan` shows."""

    spec: str
    fleet: str
    workers: tuple[Worker, ...]
    waves: tuple[tuple[str, ...], ...]
    critical_path: tuple[str, ...]
    total_minutes: float
    simulation: Simulation
    bound: LowerBound
    sweep: tuple[tuple[int, float], ...]  # (interchangeable workers, simulated makespan)

    @property
    def ratio(self) -> float:
        return self.simulation.makespan / self.bound.minutes if self.bound.minutes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "fleet": self.fleet,
            "workers": [w.to_dict() for w in self.workers],
            "phases": sum(len(w) for w in self.waves),
            "waves": [list(w) for w in self.waves],
            "critical_path": {
                "phases": list(self.critical_path),
                "minutes": self.bound.critical_path,
            },
            "total_minutes": self.total_minutes,
            "makespan_minutes": self.simulation.makespan,
            "lower_bound": asdict(self.bound),
            "ratio": round(self.ratio, 4),
            "schedule": [asdict(r) for r in self.simulation.runs],
            "by_workers": [{"workers": n, "makespan_minutes": m} for n, m in self.sweep],
        }


def plan(spec: Spec, workers: Sequence[Worker] | None = None, count: int = 1) -> Plan:
    """Plan `spec` on an inventory's `workers`, or on `count` interchangeable machines.

    Interchangeable machines have every capability the spec asks for, and pins are
    ignored for them (they name machines of an inventory). Either way the plan also
    simulates 1, 2, ... interchangeable machines up to the widest wave, to show
    where another machine stops paying.
    """
    works = works_from_spec(spec, honour_pins=workers is not None)
    graph = spec.dag()
    needs = {c for w in works for c in w.requires}
    fleet = list(workers) if workers is not None else generic_workers(count, needs)
    simulation = simulate(works, fleet, dag=graph)
    bound = lower_bound(works, fleet, graph)
    waves = graph.waves()
    widest = max((len(w) for w in waves), default=1)
    unpinned = works_from_spec(spec, honour_pins=False)
    sweep = tuple(
        (n, simulate(unpinned, generic_workers(n, needs), dag=graph).makespan)
        for n in range(1, min(widest, MAX_SWEEP) + 1)
    )
    return Plan(
        spec=spec.name,
        fleet="inventory" if workers is not None else f"{count} interchangeable",
        workers=tuple(fleet),
        waves=tuple(tuple(w) for w in waves),
        critical_path=graph.critical_path().phases,
        total_minutes=graph.total_minutes(),
        simulation=simulation,
        bound=bound,
        sweep=sweep,
    )


def utilisation(simulation: Simulation, workers: Sequence[Worker]) -> Mapping[str, float]:
    """Busy slot-minutes over available slot-minutes, per worker, over the makespan."""
    if simulation.makespan <= 0:
        return {w.name: 0.0 for w in workers}
    busy = {w.name: 0.0 for w in workers}
    for run in simulation.runs:
        busy[run.worker] += run.end - run.start
    return {w.name: busy[w.name] / (w.slots * simulation.makespan) for w in workers}
