"""Which ready phase goes to which worker: pure functions, no I/O, no clock.

The orchestrator calls `assign` on every tick and the planner calls the very same
function inside its simulation, so what `control plan` predicts is what a run does.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import NamedTuple

from control.contention import fleet_supply, speed, throughput

# A second agent on a machine slows both: k agents share its CPU, memory and disk,
# each at 1 / (1 + cost * (k - 1)) of its speed alone. The inventory sets it per host
# (superagent_slot_cost): 0 for a machine whose slots do not interfere, 1 for one that
# only time-slices.
DEFAULT_SLOT_COST = 0.5
# What starting on the machine that built a prerequisite saves, per prerequisite: a
# fetch and a merge of its branch (seconds; 15 s on a remote over SSH). Worth a tie-break,
# not the minutes of a second agent's contention or of a rare machine kept busy.
WARM_CHECKOUT_MINUTES = 0.25
# A machine is kept free for work that needs its other capability when that work
# loads the machines having it at least this much, against the fleet's average load
# (bench-schedule: lower keeps rare machines idler, higher lets scarce work wait).
RESERVE = 0.5
# ... and whatever the load, when at most this share of the fleet's throughput has it.
RARE = 0.15
# No second agent joins a machine whose running phase matters more than this many times
# the newcomer (priorities: the chain each leads): it would slow the more urgent chain.
GUARDED = 2.0
# A phase waits for a busy machine that is expected to free soon rather than hold a rare
# one: when the minutes until it frees, weighed by how urgent the phase is (its priority
# over the highest), are under 1 / WAIT_WEIGHT times the rarity cost it would save
# (bench-schedule: 0.5 lowered both the contention ratio and the waits of scarce work).
WAIT_WEIGHT = 0.5
# ... and whatever that cost, a phase leaves alone the only machine with a capability
# that remaining work needs, if it would still hold it when that work could be ready,
# when another machine it can use frees within this share of that overlap
# (bench-schedule: 1 made the contention ratio 1.10, 0.5 let scarce work wait more) ...
SOLE_HOLDER_WAIT = 0.75
# ... unless that machine is over this share of the fleet's throughput: most of the
# fleet cannot idle for its own work (an 800-phase plan on a two-slot docker machine and
# a one-slot laptop took 5% longer without it; bench-schedule, the same figures).
SOLE_HOLDER_SHARE = 0.5
# Minutes of estimate below which remaining work is none (what float sums leave over).
NO_WORK = 1e-6


def frees_in(running: Iterable[tuple[float, float]], now: float, slot_cost: float) -> float:
    """Minutes from `now` until the first of a machine's `running` phases is expected to
    end (inf if none runs): each is (when it started, in seconds, its estimate in
    minutes), all slowed by their contention. What `WorkerState.frees_in` says on a tick."""
    started = list(running)
    if not started:
        return math.inf
    slower = 1.0 / speed(len(started), slot_cost)
    return max(0.0, min((at - now) / 60.0 + minutes * slower for at, minutes in started))


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

    @property
    def weight(self) -> float:
        """Its estimate, or 1 without one: then phases count one each."""
        return self.minutes if self.minutes > 0 else 1.0


@dataclass(frozen=True)
class WorkerState:
    """A worker as the scheduler sees it at one moment.

    `holds` are the phases built (or checked out) there: a phase whose prerequisites
    a worker holds starts from a warm checkout on it. Any set works; it is only read.
    `slots` is its capacity (free or not); 0 means "as many as are free". `slot_cost`
    is how much each agent on it slows the others (DEFAULT_SLOT_COST);
    `running_priority` the highest priority of the phases it runs.
    """

    name: str
    capabilities: frozenset[str]
    free_slots: int
    holds: Set[str] = field(default_factory=frozenset)
    slots: int = 0
    slot_cost: float = DEFAULT_SLOT_COST
    running_priority: float = 0.0  # the highest priority of the phases running there
    # Minutes until the first phase running there is expected to end, by its estimate
    # (inf when none runs or it is unknown): a phase may wait for it (see `assign`).
    frees_in: float = math.inf

    @property
    def running(self) -> int:
        """Agents already at work there (unknown, so none, when `slots` is 0)."""
        return max(0, self.slots - self.free_slots) if self.slots else 0

    @property
    def throughput(self) -> float:
        return throughput(max(self.slots, self.free_slots), self.slot_cost)


@dataclass(frozen=True)
class Outlook:
    """The run's work not started yet (ready or waiting), in minutes of estimate.

    Rarity is judged against it: a machine whose capability the rest of the run needs
    much of, and few machines have, is kept for that work even before it is ready.
    """

    total: float = 0.0
    needs: Mapping[str, float] = field(default_factory=dict)  # capability -> minutes
    pinned: Mapping[str, float] = field(default_factory=dict)  # worker -> minutes
    # Minutes until the first of that work could be ready, at the least (0 if unknown).
    needs_from: Mapping[str, float] = field(default_factory=dict)  # capability -> minutes
    pinned_from: Mapping[str, float] = field(default_factory=dict)  # worker -> minutes

    @classmethod
    def of(
        cls, phases: Iterable[ReadyPhase], soonest: Mapping[str, float] | None = None
    ) -> Outlook:
        """The outlook of `phases`, the work not started; `soonest[id]` is how many
        minutes until a phase could be ready (control.dag.Dag.soonest), 0 if missing."""
        total = 0.0
        needs: dict[str, float] = {}
        pinned: dict[str, float] = {}
        needs_from: dict[str, float] = {}
        pinned_from: dict[str, float] = {}
        for phase in phases:
            total += phase.weight
            ready_in = (soonest or {}).get(phase.id, 0.0)
            for label in phase.requires:
                needs[label] = needs.get(label, 0.0) + phase.weight
                needs_from[label] = min(needs_from.get(label, ready_in), ready_in)
            if phase.pin is not None:
                pinned[phase.pin] = pinned.get(phase.pin, 0.0) + phase.weight
                pinned_from[phase.pin] = min(pinned_from.get(phase.pin, ready_in), ready_in)
        return cls(total, needs, pinned, needs_from, pinned_from)


class Assignment(NamedTuple):
    phase_id: str
    worker: str


def can_run(phase: ReadyPhase, worker: WorkerState) -> bool:
    """Whether `worker` may ever take `phase`: it has every capability, and the pin allows it."""
    return (phase.pin is None or phase.pin == worker.name) and phase.requires <= worker.capabilities


def candidates(ready: Sequence[ReadyPhase], free_slots: int) -> list[ReadyPhase]:
    """The ready phases that can start in one call: of each kind, the `free_slots` first.

    Phases of one kind (the same requires and pin) compete for the same workers, so no
    more of them than there are free slots can start, and those go by priority (then
    the order given). `assign` looks at no others; a caller holding thousands of
    ready phases (the planner) may pass only these and get the same answer.
    """
    if len(ready) <= free_slots:  # no kind can have more than the free slots
        return list(ready)
    position = {p.id: i for i, p in enumerate(ready)}
    kinds: dict[tuple[frozenset[str], str | None], list[ReadyPhase]] = {}
    for phase in ready:
        kinds.setdefault((phase.requires, phase.pin), []).append(phase)
    kept: list[ReadyPhase] = []
    for members in kinds.values():
        kept += (
            heapq.nsmallest(free_slots, members, key=lambda p: (-p.priority, position[p.id]))
            if len(members) > free_slots
            else members
        )
    kept.sort(key=lambda p: position[p.id])
    return kept


def assign(
    ready: Sequence[ReadyPhase],
    workers: Sequence[WorkerState],
    outlook: Outlook | None = None,
) -> list[Assignment]:
    """Decide which ready phases start now, and where.

    Phases go by priority: the longest remaining chain first, since any delay to it
    delays the end (among equals, the phase fewer workers can take). Each goes to the
    free worker that can run it at the least cost, in minutes of delay to the run:

    - contention: on a machine already running k agents, the phase runs 1 + cost*k
      times slower and slows those k as much again, weighed by how urgent the most
      urgent of them is, so an idle capable machine comes before a second slot of a
      busy one (unless its slot cost is 0);
    - rarity: while the phase holds the machine, its other capabilities (and the work
      pinned to it) are out of reach of the remaining work that needs them (`outlook`:
      every phase not started, by estimate, not only the ready ones), from the moment
      that work could be ready; it costs in proportion to how much of that work there
      is per machine that has them, against the fleet's average load;
    - less a warm checkout: WARM_CHECKOUT_MINUTES per prerequisite built there, a
      tie-breaker worth the fetch it saves;

    then the most free slots, then the order given. A machine is kept from a phase
    altogether (the phase waits, if no other machine takes it):
    - while it would still hold the machine when work that needs its other capability
      could be ready, if that work loads the machines having it at least RESERVE times
      the average or the capability is RARE (at most that share of the fleet has it),
      unless every machine the phase could use is kept so;
    - while it would still hold the machine when work that needs a capability only
      this machine has could be ready, if another machine the phase can use frees
      (`frees_in`) within SOLE_HOLDER_WAIT of that overlap, and the machine is at most
      SOLE_HOLDER_SHARE of the fleet;
    - when its slots interfere and it runs (or this call gives it) a phase whose
      priority is over GUARDED times the phase's: the lesser phase would slow the
      chain the end depends on.
    And a phase waits rather than take the best free machine when that one holds
    capabilities remaining work needs and a busy machine that can run the phase
    holds fewer of them (less rarity cost) and frees soon: within the rarity cost it
    saves over WAIT_WEIGHT, divided by the phase's urgency (priority over the top).
    Without an outlook, the ready phases are the remaining work, ready now.

    Two exceptions to priority order, when a phase would take a worker's free slots
    that other waiting phases can only find there:
    - if those phases can run on fewer machines than it can (a subset), and there are
      at least as many of them as free slots, they go first, fewest machines first:
      rare machines stay with the phases only they can do;
    - on the last free slot, another phase goes first if the chain that must follow
      it is longer (its tail, priority minus its own minutes): taking the slot would
      delay that chain by the whole phase, while yielding delays the first one by the
      other's (shorter) run at most.
    A phase that no free worker can take waits for the next call.
    """
    free = {w.name: w.free_slots for w in workers}
    slots_free = sum(n for n in free.values() if n > 0)
    if not ready or slots_free == 0:
        return []
    ready = candidates(ready, slots_free)
    eligible = {p.id: [w for w in workers if can_run(p, w)] for p in ready}
    names = {p: frozenset(w.name for w in able) for p, able in eligible.items()}
    costs = _Costs(workers, outlook or Outlook.of(ready), ready)
    position = {w.name: i for i, w in enumerate(workers)}

    def best_for(phase: ReadyPhase) -> WorkerState | None:
        choices = [w for w in eligible[phase.id] if free[w.name] > 0]
        kept = {w.name for w in eligible[phase.id] if costs.reserved(phase, w)}
        if len(kept) < len(eligible[phase.id]):
            choices = [w for w in choices if w.name not in kept]
        choices = [w for w in choices if not costs.guarded(phase, w)]
        if not choices:
            return None
        best = min(
            choices,
            key=lambda w: (costs.of(phase, w), -free[w.name], position[w.name]),
        )
        busy = [w for w in eligible[phase.id] if w.free_slots == 0 and free[w.name] == 0]
        return None if busy and costs.waits(phase, best, busy) else best

    def only_hope(phase: ReadyPhase, worker: WorkerState) -> bool:
        """Whether `worker` is the one free worker `phase` could start on."""
        free_ones = [w for w in eligible[phase.id] if free[w.name] > 0]
        return len(free_ones) == 1 and free_ones[0].name == worker.name

    order = sorted(ready, key=lambda p: (-p.priority, len(eligible[p.id])))
    placed: set[str] = set()
    chosen: list[Assignment] = []

    def place(phase: ReadyPhase, worker: WorkerState) -> None:
        free[worker.name] -= 1
        costs.place(phase, worker)
        placed.add(phase.id)
        chosen.append(Assignment(phase.id, worker.name))

    for phase in order:
        if phase.id in placed:
            continue
        best = best_for(phase)
        while best is not None:
            rivals = [
                q for q in order if q.id not in placed and q is not phase and only_hope(q, best)
            ]
            wider = names[phase.id]
            confined = [q for q in rivals if names[q.id] < wider]
            if len(confined) >= free[best.name]:
                # the phases with fewer machines take these slots first, fewest first
                place(min(confined, key=lambda q: len(names[q.id])), best)
            elif free[best.name] == 1:
                rival = max(
                    (q for q in rivals if not wider < names[q.id]),
                    key=lambda q: q.tail,
                    default=None,
                )
                if rival is None or rival.tail <= phase.tail:
                    break
                place(rival, best)
            else:
                break
            best = best_for(phase)
        if best is not None:
            place(phase, best)
        if len(chosen) == slots_free:
            break
    return chosen


class _Costs:
    """What starting a phase on a worker costs the run, in minutes (see `assign`)."""

    def __init__(
        self, workers: Sequence[WorkerState], outlook: Outlook, ready: Sequence[ReadyPhase]
    ) -> None:
        machines = fleet_supply(
            tuple(
                (w.name, w.capabilities, max(w.slots, w.free_slots), w.slot_cost) for w in workers
            )
        )
        rate, supply = machines.rate, machines.supply
        # minutes of remaining work per unit of the fleet's throughput: the average load
        average = outlook.total / machines.throughput

        def load(need: float, have: float) -> float:
            """How much the work needing a thing loads what has it, against the average."""
            return need / have / average if average > 0 else 0.0

        self.load = {c: load(outlook.needs.get(c, 0.0), n) for c, n in supply.items()}
        self.pin_load = {n: load(outlook.pinned.get(n, 0.0), r) for n, r in rate.items()}
        # The delay per minute one unit of it is held: full (1 / have) when that work
        # loads its machines more than the average, less in proportion when it does not
        # (then it can wait its turn).
        self.scarce = {c: min(1.0, self.load[c]) / n for c, n in supply.items()}
        self.pin_scarce = {n: min(1.0, self.pin_load[n]) / r for n, r in rate.items()}
        self.share = machines.share
        self.sole = machines.sole
        self.needs = outlook.needs
        self.needs_from = outlook.needs_from
        self.workers = workers
        self.pinned_from = outlook.pinned_from
        self.running = {w.name: w.running for w in workers}  # agents at work there
        self.taken = {w.name: 0 for w in workers}  # slots this call has filled
        # the highest priority running on each machine, counting what this call places
        self.urgent = {w.name: w.running_priority if w.running else 0.0 for w in workers}
        self.top = max([p.priority for p in ready] + list(self.urgent.values()))

    def place(self, phase: ReadyPhase, worker: WorkerState) -> None:
        self.taken[worker.name] += 1
        self.urgent[worker.name] = max(self.urgent[worker.name], phase.priority)

    def guarded(self, phase: ReadyPhase, worker: WorkerState) -> bool:
        """Whether joining `worker` would slow a phase that matters much more (GUARDED)."""
        busy = self.running[worker.name] + self.taken[worker.name] > 0
        return busy and worker.slot_cost > 0 and phase.priority * GUARDED < self.urgent[worker.name]

    def _held(self, phase: ReadyPhase, worker: WorkerState) -> tuple[float, float]:
        """(its slowdown there, the minutes it would hold the machine)."""
        slowdown = worker.slot_cost * (self.running[worker.name] + self.taken[worker.name])
        return slowdown, phase.weight * (1.0 + slowdown)

    def reserved(self, phase: ReadyPhase, worker: WorkerState) -> bool:
        """Whether `worker` is kept from `phase` for loaded work that could need it first,
        or for work only it can do when another machine frees in time (see `assign`)."""
        _, held = self._held(phase, worker)
        return (
            self._sole_kept(phase, worker, held)
            or any(
                (self.load[c] >= RESERVE or (self.share[c] <= RARE and self.load[c] > 0))
                and held > self.needs_from.get(c, 0.0)
                for c in worker.capabilities - phase.requires
            )
            or (
                phase.pin != worker.name
                and self.pin_load[worker.name] >= RESERVE
                and held > self.pinned_from.get(worker.name, 0.0)
            )
        )

    def _sole_kept(self, phase: ReadyPhase, worker: WorkerState, held: float) -> bool:
        for label in self.sole.intersection(worker.capabilities) - phase.requires:
            overlap = held - self.needs_from.get(label, 0.0)
            if (
                overlap > 0
                and self.share[label] <= SOLE_HOLDER_SHARE
                and self.needs.get(label, 0.0) > NO_WORK
            ):
                soon = min(
                    (w.frees_in for w in self.workers if label not in w.capabilities
                     and can_run(phase, w)),
                    default=math.inf,
                )  # fmt: skip
                if soon < SOLE_HOLDER_WAIT * overlap:
                    return True
        return False

    def waits(self, phase: ReadyPhase, best: WorkerState, busy: Sequence[WorkerState]) -> bool:
        """Whether `phase` had better wait for one of the `busy` machines than take `best`."""
        if not any(self.needs.get(c, 0.0) > NO_WORK for c in best.capabilities - phase.requires):
            return False
        mine = self.kept(phase, best)
        if mine <= 0:
            return False
        urgency = phase.priority / self.top if self.top > 0 else 1.0
        return any(
            w.frees_in * urgency * WAIT_WEIGHT < mine - self.kept(phase, w)
            for w in busy
            if w.frees_in < math.inf
        )

    def kept(self, phase: ReadyPhase, worker: WorkerState) -> float:
        """Minutes of delay to other work, by rarity, if `phase` holds `worker`: its other
        capabilities (and the work pinned to it) are out of reach for as long, which
        costs from the moment the work needing them could be ready."""
        _, held = self._held(phase, worker)
        kept = sum(
            self.scarce[c] * max(0.0, held - self.needs_from.get(c, 0.0))
            for c in worker.capabilities - phase.requires
        )
        if phase.pin != worker.name:
            kept += self.pin_scarce[worker.name] * max(
                0.0, held - self.pinned_from.get(worker.name, 0.0)
            )
        return kept

    def of(self, phase: ReadyPhase, worker: WorkerState) -> float:
        # It runs (1 + slowdown) times slower and slows the others on the machine about
        # as much; it holds the machine's rare capabilities for as long (`kept`).
        slowdown, _ = self._held(phase, worker)
        kept = self.kept(phase, worker)
        warm = WARM_CHECKOUT_MINUTES * len(phase.depends_on & worker.holds)
        # the others' delay weighs as much as the most urgent of them matters
        urgency = self.urgent[worker.name] / self.top if self.top > 0 else 1.0
        return phase.weight * slowdown * (1.0 + urgency) + kept - warm


def assign_first_free(
    ready: Sequence[ReadyPhase], workers: Sequence[WorkerState], outlook: Outlook | None = None
) -> list[Assignment]:
    """The baseline: each phase, in the order it became ready, to the first free capable worker.

    This is "whichever is free", the policy superagent's predecessor used; the
    benchmark measures `assign` against it. Capabilities and pins still hold; the
    outlook is ignored.
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
