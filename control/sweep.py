"""The what-if sweep: the same spec on 1, 2, ... interchangeable one-slot machines.

On such machines `assign` reduces to priority order with one rule (the last free slot
goes to the phase with the longest tail among those shown), and which machine takes a
phase changes no time, so the sweep runs this flat-list replay instead of the full
simulation (control.simulation); the planner's test holds the two to the same schedule.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Sequence

from control.dag import Dag
from control.simulation import EPSILON, Work


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
    return Sweep(works, dag).times(count)


class Sweep:
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

    def _longest_tail(
        self, pool: list[list[tuple[float, int, int]]]
    ) -> list[tuple[float, int, int]]:
        """Of the best phase of each kind, the one with the longest tail (among equal
        tails, the first in priority order), who takes the last free slot: its heap."""
        tail = self.tail
        found: list[tuple[float, int, int]] = []
        best: tuple[float, int, int] = (0.0, 0, 0)
        longest = 0.0
        for heap in pool:
            if heap:
                head = heap[0]
                length = tail[head[2]]
                if not found or length > longest or (length == longest and head < best):
                    found, best, longest = heap, head, length
        return found  # a phase is waiting, so a heap holds one

    def starts(self, count: int) -> list[float]:
        priority, minutes, tail, kind = self.priority, self.minutes, self.tail, self.kind
        heappush, heappop, dependents = heapq.heappush, heapq.heappop, self.dependents
        single, longest_tail = self.kinds == 1, self._longest_tail
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
                top = pool[0] if single else longest_tail(pool)
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
            limit = now + EPSILON * max(1.0, now)
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
