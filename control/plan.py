"""What a run will cost in time, before it starts: waves, critical path, makespan, lower bound.

The makespan comes from control.simulation, which drives the real scheduler with the
estimates; the lower bound says how far any schedule could improve on it; the what-if
sweep (control.sweep) shows where another machine stops paying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from control.dag import Dag
from control.inventory import Worker, generic_workers
from control.scheduler import ReadyPhase, WorkerState, can_run
from control.simulation import Simulation, Work, check_runnable, dag_of, simulate, works_from_spec
from control.spec import Spec
from control.sweep import Sweep

# How many what-if fleet sizes `plan` simulates at most.
MAX_SWEEP = 12


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


def lower_bound(
    works: Sequence[Work], workers: Sequence[Worker], dag: Dag | None = None
) -> LowerBound:
    """The largest of: the critical path, total work / all slots, for each capability
    the work that needs it / the slots that have it, and for each set of workers that
    is all some phase can use, the work only that set can do / its slots.

    A machine's slots count as its throughput (control.scheduler.throughput): with
    contention, its k agents together do less than k agents' work."""
    check_runnable(works, workers)
    graph = dag or dag_of(works)
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
    # Pins name machines of an inventory, not interchangeable ones; with none to drop,
    # the sweep reads the same works (10,000 fewer objects for a 10,000-phase spec).
    unpinned = works
    if any(w.pin is not None for w in works):
        unpinned = works_from_spec(spec, honour_pins=False)
    what_if = Sweep(unpinned, graph)
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


def utilisation(simulation: Simulation, workers: Sequence[Worker]) -> Mapping[str, float]:
    """Busy slot-minutes over available slot-minutes, per worker, over the makespan."""
    if simulation.makespan <= 0:
        return {w.name: 0.0 for w in workers}
    busy = {w.name: 0.0 for w in workers}
    for run in simulation.runs:
        busy[run.worker] += run.end - run.start
    return {w.name: busy[w.name] / (w.slots * simulation.makespan) for w in workers}
