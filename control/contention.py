"""How agents on one machine slow each other, and what a fleet supplies: throughput per
machine and per capability. The scheduler's costs and the planner's bound both count
slots at their throughput, not their number.
"""

from __future__ import annotations

import functools
from typing import NamedTuple


def speed(running: int, slot_cost: float) -> float:
    """How fast each of `running` agents on one machine goes, against one agent alone."""
    return 1.0 / (1.0 + slot_cost * (running - 1)) if running > 1 else 1.0


def throughput(slots: int, slot_cost: float) -> float:
    """The most work a machine of `slots` slots does per minute, all agents together.

    k agents do k * speed(k) between them: rising with k while the cost is under 1,
    flat at 1 from there (a machine that only time-slices is worth one slot).
    """
    slots = max(1, slots)
    return slots * speed(slots, slot_cost) if slot_cost < 1 else 1.0


class FleetSupply(NamedTuple):
    """The machines' side of the costs: what changes only when the fleet does."""

    rate: dict[str, float]  # machine -> throughput
    supply: dict[str, float]  # capability -> the throughput of the machines having it
    throughput: float  # the whole fleet's
    share: dict[str, float]  # capability -> its share of the fleet's throughput
    sole: frozenset[str]  # the capabilities one machine has


@functools.lru_cache(maxsize=64)
def fleet_supply(machines: tuple[tuple[str, frozenset[str], int, float], ...]) -> FleetSupply:
    """The `FleetSupply` of machines given as (name, capabilities, capacity, slot cost).

    Cached: control.scheduler.assign runs on every tick, and on every step of a plan's
    simulation (10,000 steps for 10,000 phases), against the same machines; working
    these out on each call was a third of its cost. The dicts are shared: read them,
    never write.
    """
    rate = {name: throughput(capacity, cost) for name, _, capacity, cost in machines}
    supply: dict[str, float] = {}
    holders: dict[str, int] = {}
    for name, capabilities, _, _ in machines:
        for label in capabilities:
            supply[label] = supply.get(label, 0.0) + rate[name]
            holders[label] = holders.get(label, 0) + 1
    fleet = sum(rate.values())
    share = {c: n / fleet for c, n in supply.items()}
    return FleetSupply(
        rate, supply, fleet, share, frozenset(c for c, n in holders.items() if n == 1)
    )
