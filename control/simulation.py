"""The simulated run: the real scheduler driven with the estimates, in simulated time.

`control plan` (control.plan) and the scheduling benchmark run a spec's phases here:
each takes its estimate, slowed by contention on its machine, and `assign` decides at
each step exactly as the orchestrator's tick would, so the prediction is what a run does.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from control.contention import speed
from control.dag import Dag
from control.errors import UsageError
from control.inventory import Worker
from control.scheduler import Assignment, Outlook, ReadyPhase, WorkerState, assign, can_run
from control.spec import Spec

Policy = Callable[[Sequence[ReadyPhase], Sequence[WorkerState], Outlook], list[Assignment]]
# Two events this close (relative) are one: phases that end together free their slots together.
EPSILON = 1e-9


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


def dag_of(works: Sequence[Work]) -> Dag:
    return Dag({w.id: w.depends_on for w in works}, {w.id: w.minutes for w in works})


def check_runnable(works: Sequence[Work], workers: Sequence[Worker]) -> None:
    if not workers:
        raise UsageError("no workers to plan for")
    states = [WorkerState(w.name, w.capabilities, w.slots) for w in workers]
    # Phases of one kind (requires, pin) run on the same workers: one check per kind.
    runnable: dict[tuple[frozenset[str], str | None], bool] = {}
    for work in works:
        kind = (work.requires, work.pin)
        if kind not in runnable:
            phase = ReadyPhase(work.id, work.requires, work.pin)
            runnable[kind] = any(can_run(phase, s) for s in states)
        if not runnable[kind]:
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
    check_runnable(works, workers)
    graph = dag or dag_of(works)
    priority = graph.bottom_levels()
    waiting = {w.id: len(set(w.depends_on)) for w in works}
    ready = _Ready(
        (
            ReadyPhase(w.id, w.requires, w.pin, priority[w.id], frozenset(w.depends_on), w.minutes)
            for w in works
        ),
        graph.top_levels(),
    )
    ready.add_all([work.id for work in works if waiting[work.id] == 0], 0.0)
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
                    machines[w.name].frees_in(now),
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

    def add_all(self, phase_ids: Iterable[str], now: float) -> None:
        """`add` each in turn, the heaps built once at the end: a wide plan has thousands
        ready at the start, and one heapify costs less than a push each."""
        for phase_id in phase_ids:
            phase = self.phases[phase_id]
            heap = self.heaps.setdefault((phase.requires, phase.pin), [])
            heap.append((-phase.priority, len(self.since), phase_id))
            self.since[phase_id] = now
            self.waiting += 1
        for heap in self.heaps.values():
            heapq.heapify(heap)

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

    def frees_in(self, now: float) -> float:
        """Minutes from `now` until its next phase ends (inf when idle): what the
        orchestrator tells the scheduler from the attempts' estimates."""
        return self.next_end() - now if self.running else math.inf

    def next_end(self) -> float:
        left = self.running[0][0] - self.clock
        return self.at + left / speed(len(self.running), self.slot_cost)

    def finish(self, now: float) -> list[str]:
        """The phases done by `now` (within rounding), taken off the machine."""
        if not self.running:
            return []
        self._advance(now)
        done: list[str] = []
        while self.running and self.running[0][0] <= self.clock + EPSILON * max(1.0, self.clock):
            done.append(heapq.heappop(self.running)[1])
        return done
