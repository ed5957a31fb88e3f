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
    """The graph in flat lists, built once for every fleet size the sweep tries.

    The ready phases wait in one heap per kind (requires, pin) keyed by a single int,
    `rank + order`: `rank` is the phase's place among the distinct priorities (highest
    first) times the number of phases, `order` the count of phases that became ready
    before it. Ints compare in C where the (-priority, order, index) tuples they
    replace compared element by element in every heap operation: the sweep runs a
    10,000-phase graph a dozen times, and those comparisons were most of its time.
    The order is the same: by priority, then in the order they became ready.
    """

    def __init__(self, works: Sequence[Work], dag: Dag) -> None:
        self.ids = [w.id for w in works]
        index = {w.id: i for i, w in enumerate(works)}
        bottom = dag.bottom_levels()
        priority = [bottom[w.id] for w in works]
        self.span = max(1, len(works))  # more than any `order`
        places = {p: k for k, p in enumerate(sorted(set(priority), reverse=True))}
        self.rank = [places[p] * self.span for p in priority]
        self.minutes = [w.minutes for w in works]
        self.tail = [p - m for p, m in zip(priority, self.minutes, strict=True)]
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

    def _longest_tail(self, pool: list[list[int]], who: list[int]) -> list[int]:
        """Of the best phase of each kind, the one with the longest tail (among equal
        tails, the first in priority order), who takes the last free slot: its heap."""
        tail, span = self.tail, self.span
        found: list[int] = []
        best = 0
        longest = 0.0
        for heap in pool:
            if heap:
                head = heap[0]
                length = tail[who[head % span]]
                if not found or length > longest or (length == longest and head < best):
                    found, best, longest = heap, head, length
        return found  # a phase is waiting, so a heap holds one

    def _first_ready(self, who: list[int]) -> list[list[int]]:
        """The heaps of the phases ready at the start, numbered in `who` from 0."""
        pool: list[list[int]] = [[] for _ in range(self.kinds)]
        order = 0
        for i, left in enumerate(self.waiting):
            if left == 0:
                pool[self.kind[i]].append(self.rank[i] + order)
                who[order] = i
                order += 1
        for heap in pool:
            heapq.heapify(heap)
        return pool

    def _several(self, pool: list[list[int]], who: list[int], free: int) -> list[int]:
        """The keys of the phases `free` slots (more than one) take, off the heaps: by
        priority, the last slot to the longest tail among those shown; the others go back."""
        tail, span, kind = self.tail, self.span, self.kind
        shown = [heapq.heappop(heap) for heap in pool if heap for _ in range(min(free, len(heap)))]
        shown.sort()  # priority, then order: `assign`'s priority order
        chosen = shown[: free - 1]
        rest = shown[free - 1 :]
        if rest:
            best = max(range(len(rest)), key=lambda k: (tail[who[rest[k] % span]], -k))
            chosen.append(rest.pop(best))
            for key in rest:
                heapq.heappush(pool[kind[who[key % span]]], key)
        return chosen

    def starts(self, count: int) -> list[float]:
        """When each phase starts on `count` machines (see `interchangeable_times`)."""
        rank, minutes, kind, span = self.rank, self.minutes, self.kind, self.span
        heappush, heappop, dependents = heapq.heappush, heapq.heappop, self.dependents
        single, longest_tail = self.kinds == 1, self._longest_tail
        waiting = list(self.waiting)
        who = [0] * span  # the phase that became ready `order`-th
        pool = self._first_ready(who)
        order = sum(map(len, pool))
        start = [0.0] * len(waiting)
        running: list[tuple[float, int, int]] = []  # (end, order, phase)
        free = count
        unstarted = order
        now = 0.0
        while unstarted or running:
            if unstarted and free == 1:  # most steps: only the last-slot rule applies
                # (of one kind, the last slot goes to the best of it: its heap's top)
                number = heappop(pool[0] if single else longest_tail(pool, who)) % span
                i = who[number]
                heappush(running, (now + minutes[i], number, i))
                start[i] = now
                free = 0
                unstarted -= 1
            elif unstarted and free:
                chosen = self._several(pool, who, free)
                for key in chosen:
                    number = key % span
                    i = who[number]
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
                        heappush(pool[kind[child]], rank[child] + order)
                        who[order] = child
                        order += 1
                        unstarted += 1
        return start
