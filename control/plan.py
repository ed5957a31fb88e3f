"""What a run will cost in time, before it starts: waves, critical path, makespan, lower bound.

The makespan comes from a discrete-event simulation that drives the real scheduler
with the estimates; the lower bound says how far any schedule could improve on it.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from control.dag import Dag
from control.errors import UsageError
from control.inventory import Worker, generic_workers
from control.scheduler import Assignment, Outlook, ReadyPhase, WorkerState, assign, can_run, speed
from control.spec import Spec

Policy = Callable[[Sequence[ReadyPhase], Sequence[WorkerState], Outlook], list[Assignment]]
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
    ready: float = 0.0  # when its prerequisites were all done: start - ready is its wait


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
    """Run the schedule in simulated time: each phase takes its estimate, slowed by contention.

    At time 0 and whenever phases finish, the policy sees the ready phases (in the
    order they became ready), the workers' free slots and holdings, and the outlook
    (the work not started), exactly as the orchestrator will show them, and its
    assignments start at once. k phases on one machine each run at
    control.scheduler.speed(k, its slot cost). `assign` is shown only the phases that
    could start (control.scheduler.candidates), so a wide graph costs no more per step
    than a narrow one; other policies (the benchmark's baselines) see them all.
    """
    _check_runnable(works, workers)
    graph = dag or _dag(works)
    priority = graph.bottom_levels()
    waiting = {w.id: len(set(w.depends_on)) for w in works}
    ready = _Ready(
        (
            ReadyPhase(w.id, w.requires, w.pin, priority[w.id], frozenset(w.depends_on), w.minutes)
            for w in works
        ),
        graph.top_levels(),
    )
    for work in works:
        if waiting[work.id] == 0:
            ready.add(work.id, 0.0)
    machines = {w.name: _Machine(w.slot_cost) for w in workers}
    free = {w.name: w.slots for w in workers}
    holds: dict[str, set[str]] = {w.name: set() for w in workers}
    started: dict[str, tuple[str, float]] = {}
    ended: dict[str, float] = {}
    now = 0.0
    while True:
        slots_free = sum(free.values())
        if ready.waiting and slots_free:
            shown = ready.show(slots_free if policy is assign else ready.waiting)
            states = [
                WorkerState(
                    w.name,
                    w.capabilities,
                    free[w.name],
                    holds[w.name],
                    w.slots,
                    w.slot_cost,
                    max((ready.phases[p].priority for _, p in machines[w.name].running), default=0),
                )
                for w in workers
            ]
            chosen = policy(shown, states, ready.outlook(now))
            for phase_id, worker in chosen:
                phase = ready.start(phase_id)
                free[worker] -= 1
                machines[worker].start(phase_id, phase.minutes, now)
                started[phase_id] = (worker, now)
            ready.put_back()
        busy = [m for m in machines.values() if m.busy]
        if not busy:
            if ready.waiting:  # nothing running, nothing startable: the policy is stuck
                raise UsageError(f"the scheduler assigned none of {', '.join(ready.ids())}")
            break
        now = min(m.next_end() for m in busy)
        for name, machine in machines.items():
            for phase_id in machine.finish(now):
                ended[phase_id] = now
                free[name] += 1
                holds[name].add(phase_id)
                for child in graph.dependents[phase_id]:
                    waiting[child] -= 1
                    if waiting[child] == 0:
                        ready.add(child, now)
    runs = sorted(
        (Run(p, worker, start, ended[p], ready.since[p]) for p, (worker, start) in started.items()),
        key=lambda r: r.start,
    )
    return Simulation(max(ended.values(), default=0.0), tuple(runs))


class _Ready:
    """The simulation's ready phases, one heap per kind, and the outlook of what has not started.

    Of each kind (requires, pin) only the best few can start in one step, so `show`
    takes those off the heaps and `put_back` returns the ones the policy left.
    """

    def __init__(self, phases: Iterable[ReadyPhase], top: Mapping[str, float]) -> None:
        self.phases = {p.id: p for p in phases}
        # Per capability (and pinned worker), the phases not started that need it, by
        # how soon they could be ready (their top level); started ones are skipped lazily.
        self.firsts: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for phase in self.phases.values():
            for key in self._keys(phase):
                self.firsts.setdefault(key, []).append((top[phase.id], phase.id))
        for heap in self.firsts.values():
            heapq.heapify(heap)
        self.started: set[str] = set()
        self.heaps: dict[tuple[frozenset[str], str | None], list[tuple[float, int, str]]] = {}
        self.since: dict[str, float] = {}  # when each phase became ready
        self.shown: dict[str, int] = {}
        self.waiting = 0
        self.total = 0.0
        self.needs: dict[str, float] = {}
        self.pinned: dict[str, float] = {}
        for phase in self.phases.values():
            self._count(phase, 1.0)

    def _count(self, phase: ReadyPhase, sign: float) -> None:
        self.total += sign * phase.weight
        for label in phase.requires:
            self.needs[label] = self.needs.get(label, 0.0) + sign * phase.weight
        if phase.pin is not None:
            self.pinned[phase.pin] = self.pinned.get(phase.pin, 0.0) + sign * phase.weight

    def add(self, phase_id: str, now: float) -> None:
        phase = self.phases[phase_id]
        heap = self.heaps.setdefault((phase.requires, phase.pin), [])
        heapq.heappush(heap, (-phase.priority, len(self.since), phase_id))
        self.since[phase_id] = now
        self.waiting += 1

    def show(self, slots_free: int) -> list[ReadyPhase]:
        """The ready phases that could start on `slots_free` slots, in the order they came."""
        for heap in self.heaps.values():
            for _ in range(min(slots_free, len(heap))):
                _, order, phase_id = heapq.heappop(heap)
                self.shown[phase_id] = order
        return [self.phases[p] for p in sorted(self.shown, key=self.shown.__getitem__)]

    @staticmethod
    def _keys(phase: ReadyPhase) -> list[tuple[str, str]]:
        keys = [("needs", c) for c in phase.requires]
        return [*keys, ("pinned", phase.pin)] if phase.pin is not None else keys

    def _soonest(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        found: dict[str, dict[str, float]] = {"needs": {}, "pinned": {}}
        for (kind, label), heap in self.firsts.items():
            while heap and heap[0][1] in self.started:
                heapq.heappop(heap)
            if heap:
                found[kind][label] = max(0.0, heap[0][0] - now)
        return found["needs"], found["pinned"]

    def start(self, phase_id: str) -> ReadyPhase:
        del self.shown[phase_id]
        self.started.add(phase_id)
        phase = self.phases[phase_id]
        self._count(phase, -1.0)
        self.waiting -= 1
        return phase

    def put_back(self) -> None:
        for phase_id, order in self.shown.items():
            phase = self.phases[phase_id]
            heapq.heappush(
                self.heaps[(phase.requires, phase.pin)], (-phase.priority, order, phase_id)
            )
        self.shown.clear()

    def outlook(self, now: float) -> Outlook:
        """The work not started (`needs` and `pinned` are live, only read during the call).

        How soon that work could be ready comes from the top levels: with every phase
        taking at least its estimate, none is ready before its longest chain of
        prerequisites has run.
        """
        needs_from, pinned_from = self._soonest(now)
        return Outlook(self.total, self.needs, self.pinned, needs_from, pinned_from)

    def ids(self) -> list[str]:
        return sorted(p for heap in self.heaps.values() for _, _, p in heap)


class _Machine:
    """One worker in simulated time: k phases at once, each at speed(k, slot cost).

    Progress is kept on a virtual clock that runs at the current speed, so a phase
    ends when the clock has advanced by its estimate since it started.
    """

    def __init__(self, slot_cost: float) -> None:
        self.slot_cost = slot_cost
        self.clock = 0.0  # virtual minutes of progress each running phase has made
        self.at = 0.0  # the real time `clock` was last brought up to
        self.running: list[tuple[float, str]] = []  # (clock value when done, phase)

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def _advance(self, now: float) -> None:
        if self.running:
            self.clock += (now - self.at) * speed(len(self.running), self.slot_cost)
        self.at = now

    def start(self, phase_id: str, minutes: float, now: float) -> None:
        self._advance(now)
        heapq.heappush(self.running, (self.clock + minutes, phase_id))

    def next_end(self) -> float:
        left = self.running[0][0] - self.clock
        return self.at + left / speed(len(self.running), self.slot_cost)

    def finish(self, now: float) -> list[str]:
        """The phases done by `now` (within rounding), taken off the machine."""
        if not self.running:
            return []
        self._advance(now)
        done: list[str] = []
        while self.running and self.running[0][0] <= self.clock + _EPSILON * max(1.0, self.clock):
            done.append(heapq.heappop(self.running)[1])
        return done


_EPSILON = 1e-9


def lower_bound(
    works: Sequence[Work], workers: Sequence[Worker], dag: Dag | None = None
) -> LowerBound:
    """The largest of: the critical path, total work / all slots, for each capability
    the work that needs it / the slots that have it, and for each set of workers that
    is all some phase can use, the work only that set can do / its slots.

    A machine's slots count as its throughput (control.scheduler.throughput): with
    contention, its k agents together do less than k agents' work."""
    _check_runnable(works, workers)
    graph = dag or _dag(works)
    critical = graph.critical_path().minutes
    slots_of = {w.name: w.throughput for w in workers}
    per_slot = sum(w.minutes for w in works) / sum(slots_of.values())
    per_capability: dict[str, float] = {}
    for label in sorted({c for w in works for c in w.requires}):
        need = sum(w.minutes for w in works if label in w.requires)
        have = sum(w.throughput for w in workers if label in w.capabilities)
        per_capability[label] = need / have
    states = [WorkerState(w.name, w.capabilities, w.slots) for w in workers]
    kinds: dict[tuple[frozenset[str], str | None], float] = {}
    for work in works:
        kinds[(work.requires, work.pin)] = kinds.get((work.requires, work.pin), 0.0) + work.minutes
    able: dict[frozenset[str], float] = {}
    for (requires, pin), minutes in kinds.items():
        phase = ReadyPhase("", requires, pin)
        group = frozenset(s.name for s in states if can_run(phase, s))
        able[group] = able.get(group, 0.0) + minutes
    everyone = frozenset(slots_of)
    per_group: dict[str, float] = {}
    for group in sorted({a for a in able if a != everyone}, key=sorted):
        only_there = sum(minutes for a, minutes in able.items() if a <= group)
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
            "workers": [{**w.to_dict(), "slot_cost": w.slot_cost} for w in self.workers],
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
            # Not asdict, which deep-copies: 10,000 runs took a third of a second.
            "schedule": [dict(vars(r)) for r in self.simulation.runs],
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
    what_if = _Sweep(works_from_spec(spec, honour_pins=False), graph)
    sweep = tuple((n, what_if.makespan(n)) for n in range(1, min(widest, MAX_SWEEP) + 1))
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


def interchangeable_times(
    works: Sequence[Work], count: int, dag: Dag
) -> dict[str, tuple[float, float]]:
    """When each phase starts and ends, as `simulate` with `assign` has them on `count`
    interchangeable one-slot machines (the last end is the makespan).

    The what-if sweep runs this instead of the simulation: on such machines `assign`
    reduces to priority order with one rule (the last free slot goes to the phase with
    the longest tail among those shown), and which machine takes a phase changes no
    time. The planner's test holds the two to the same schedule.
    """
    return _Sweep(works, dag).times(count)


class _Sweep:
    """The graph in flat lists, built once for every fleet size the sweep tries."""

    def __init__(self, works: Sequence[Work], dag: Dag) -> None:
        self.ids = [w.id for w in works]
        index = {w.id: i for i, w in enumerate(works)}
        bottom = dag.bottom_levels()
        self.priority = [bottom[w.id] for w in works]
        self.minutes = [w.minutes for w in works]
        self.tail = [p - m for p, m in zip(self.priority, self.minutes, strict=True)]
        kinds: dict[tuple[frozenset[str], str | None], int] = {}
        self.kind = [kinds.setdefault((w.requires, w.pin), len(kinds)) for w in works]
        self.kinds = len(kinds)
        self.waiting = [len(set(w.depends_on)) for w in works]
        self.dependents = [[index[c] for c in dag.dependents[w.id]] for w in works]

    def times(self, count: int) -> dict[str, tuple[float, float]]:
        start = self.starts(count)
        return {p: (start[i], start[i] + self.minutes[i]) for i, p in enumerate(self.ids)}

    def makespan(self, count: int) -> float:
        ends = map(operator.add, self.starts(count), self.minutes)
        return max(ends, default=0.0)

    def _longest_tail(self, pool: list[list[tuple[float, int, int]]]) -> int:
        """Of the best phase of each kind, the one with the longest tail (among equal
        tails, the first in priority order): who takes the last free slot."""
        tail = self.tail
        top: tuple[float, int, int] | None = None
        for heap in pool:
            if heap and (
                top is None
                or tail[heap[0][2]] > tail[top[2]]
                or (tail[heap[0][2]] == tail[top[2]] and heap[0] < top)
            ):
                top = heap[0]
        assert top is not None  # a phase is waiting, so a heap holds one
        return top[2]

    def starts(self, count: int) -> list[float]:
        priority, minutes, tail, kind = self.priority, self.minutes, self.tail, self.kind
        heappush, heappop, dependents = heapq.heappush, heapq.heappop, self.dependents
        waiting = list(self.waiting)
        pool: list[list[tuple[float, int, int]]] = [[] for _ in range(self.kinds)]
        order = 0
        for i, left in enumerate(waiting):
            if left == 0:
                pool[kind[i]].append((-priority[i], order, i))
                order += 1
        for heap in pool:
            heapq.heapify(heap)
        start = [0.0] * len(waiting)
        running: list[tuple[float, int, int]] = []
        free = count
        unstarted = order
        now = 0.0
        while unstarted or running:
            if unstarted and free == 1:  # most steps: only the last-slot rule applies
                # (of one kind, the last slot goes to the best of it: its heap's top)
                top = pool[0] if len(pool) == 1 else pool[kind[self._longest_tail(pool)]]
                _, number, i = heappop(top)
                heappush(running, (now + minutes[i], number, i))
                start[i] = now
                free = 0
                unstarted -= 1
            elif unstarted and free:
                shown = [
                    heappop(heap) for heap in pool if heap for _ in range(min(free, len(heap)))
                ]
                shown.sort()  # (-priority, order): `assign`'s priority order
                chosen = shown[: free - 1]
                rest = shown[free - 1 :]
                if rest:
                    best = max(range(len(rest)), key=lambda k: (tail[rest[k][2]], -k))
                    chosen.append(rest.pop(best))
                    for item in rest:
                        heappush(pool[kind[item[2]]], item)
                for _, number, i in chosen:
                    heappush(running, (now + minutes[i], number, i))
                    start[i] = now
                free -= len(chosen)
                unstarted -= len(chosen)
            now = running[0][0]
            limit = now + _EPSILON * max(1.0, now)
            while running and running[0][0] <= limit:
                i = heappop(running)[2]
                free += 1
                for child in dependents[i]:
                    waiting[child] -= 1
                    if waiting[child] == 0:
                        heappush(pool[kind[child]], (-priority[child], order, child))
                        order += 1
                        unstarted += 1
        return start


def utilisation(simulation: Simulation, workers: Sequence[Worker]) -> Mapping[str, float]:
    """Busy slot-minutes over available slot-minutes, per worker, over the makespan."""
    if simulation.makespan <= 0:
        return {w.name: 0.0 for w in workers}
    busy = {w.name: 0.0 for w in workers}
    for run in simulation.runs:
        busy[run.worker] += run.end - run.start
    return {w.name: busy[w.name] / (w.slots * simulation.makespan) for w in workers}
