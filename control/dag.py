"""The phase graph: what is ready, the waves, the critical path, what a failure blocks.

Pure and small on purpose: the validator, the planner, the scheduler's priorities
and the orchestrator's run loop all read the same graph through these functions.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from control.errors import UsageError


def find_cycles(depends_on: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one, e.g. `[api, ui, api]`.

    Each cycle follows `depends_on` edges (api depends on ui, which depends on api)
    and starts at the component's first phase in input order, so the output is
    stable. Edges to unknown phases are ignored: those are reported separately.
    """
    index_of = {node: i for i, node in enumerate(depends_on)}
    if _acyclic(depends_on, index_of):
        return []
    cycles: list[list[str]] = []
    for component in _strong_components(depends_on, index_of):
        members = set(component)
        start = min(component, key=index_of.__getitem__)
        if len(component) == 1 and start not in depends_on[start]:
            continue
        cycles.append(_shortest_cycle(start, depends_on, members))
    cycles.sort(key=lambda cycle: index_of[cycle[0]])
    return cycles


def _acyclic(depends_on: Mapping[str, Sequence[str]], index_of: Mapping[str, int]) -> bool:
    """Whether peeling off the phases with no prerequisite left (Kahn) removes them all.

    What every valid spec needs to know, in one pass of plain counting: a 10,000-phase
    spec took a tenth of a second in Tarjan's search, which now runs only to name a cycle.
    """
    waiting = {n: len({d for d in deps if d in index_of}) for n, deps in depends_on.items()}
    dependents: dict[str, list[str]] = {n: [] for n in depends_on}
    for node, deps in depends_on.items():
        for dep in set(deps):
            if dep in index_of:
                dependents[dep].append(node)
    free = [n for n, left in waiting.items() if left == 0]
    peeled = 0
    while free:
        node = free.pop()
        peeled += 1
        for child in dependents[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                free.append(child)
    return peeled == len(depends_on)


def _strong_components(
    depends_on: Mapping[str, Sequence[str]], index_of: Mapping[str, int]
) -> list[list[str]]:
    """Tarjan's algorithm without recursion (a chain of 1,000 phases must not overflow)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    targets_of = {n: [t for t in deps if t in index_of] for n, deps in depends_on.items()}
    for root in depends_on:
        if root in order:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                order[node] = low[node] = len(order)
                stack.append(node)
                on_stack.add(node)
            targets = targets_of[node]
            descended = False
            while edge < len(targets):
                target = targets[edge]
                edge += 1
                if target not in order:
                    work.append((node, edge))
                    work.append((target, 0))
                    descended = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], order[target])
            if descended:
                continue
            if low[node] == order[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _shortest_cycle(
    start: str, depends_on: Mapping[str, Sequence[str]], members: Collection[str]
) -> list[str]:
    """Breadth-first from `start` back to itself inside its component: the shortest cycle."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in depends_on[node]:
            if target not in members:
                continue
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target not in previous:
                previous[target] = node
                queue.append(target)
    raise AssertionError(f"{start} is in a strongly connected component without a cycle")


@dataclass(frozen=True)
class CriticalPath:
    """The longest chain of dependent phases by estimate: no schedule finishes sooner."""

    minutes: float
    phases: tuple[str, ...]


class Dag:
    """An acyclic graph of phases with an estimate each; built once, queried many times."""

    def __init__(
        self,
        depends_on: Mapping[str, Sequence[str]],
        estimates: Mapping[str, float] | None = None,
    ) -> None:
        self.nodes: tuple[str, ...] = tuple(depends_on)
        self.depends_on: dict[str, tuple[str, ...]] = {n: tuple(d) for n, d in depends_on.items()}
        for node, deps in self.depends_on.items():
            for dep in deps:
                if dep not in self.depends_on:
                    raise UsageError(f"phase {node!r} depends on unknown phase {dep!r}")
        self.estimates: dict[str, float] = {
            n: float((estimates or {}).get(n, 1.0)) for n in self.nodes
        }
        self.dependents: dict[str, list[str]] = {n: [] for n in self.nodes}
        for node, deps in self.depends_on.items():
            for dep in deps:
                self.dependents[dep].append(node)
        self.order: tuple[str, ...] = self._topological_order()
        # The order leaves out exactly the phases on or behind a cycle: a complete one
        # proves there is none, so Tarjan's search (a tenth of a second on 10,000
        # phases) runs only to name the cycle.
        if len(self.order) < len(self.nodes):
            cycle = find_cycles(self.depends_on)[0]
            raise UsageError("dependency cycle: " + " -> ".join(cycle))
        self._bottom: dict[str, float] | None = None

    def _topological_order(self) -> tuple[str, ...]:
        """Kahn's algorithm, taking phases in input order among the available ones.

        The available phases wait in a heap by input position: linear-logarithmic,
        so 10,000 independent phases take milliseconds, not minutes.
        """
        waiting = {n: len(set(d)) for n, d in self.depends_on.items()}
        available = [i for i, n in enumerate(self.nodes) if waiting[n] == 0]
        position = {n: i for i, n in enumerate(self.nodes)}
        order: list[str] = []
        while available:
            node = self.nodes[heapq.heappop(available)]
            order.append(node)
            for child in set(self.dependents[node]):
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(available, position[child])
        return tuple(order)

    def ready(self, done: Collection[str], running: Collection[str] = ()) -> list[str]:
        """Phases not done nor running whose prerequisites are all done, in input order."""
        return [
            n
            for n in self.nodes
            if n not in done and n not in running and all(d in done for d in self.depends_on[n])
        ]

    def waves(self) -> list[list[str]]:
        """Wave k holds the phases whose longest chain of prerequisites has k phases."""
        level: dict[str, int] = {}
        for node in self.order:
            level[node] = 1 + max((level[d] for d in self.depends_on[node]), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for node in self.nodes:
            waves[level[node]].append(node)
        return waves

    def bottom_levels(self) -> dict[str, float]:
        """Minutes from a phase's start to the end of the project, at the least.

        The phase's estimate plus the longest chain of dependents after it: the
        scheduler's priority, since delaying a phase delays the end by as much.
        """
        if self._bottom is None:
            bottom: dict[str, float] = {}
            for node in reversed(self.order):
                after = max((bottom[c] for c in self.dependents[node]), default=0.0)
                bottom[node] = self.estimates[node] + after
            self._bottom = bottom
        return dict(self._bottom)

    def top_levels(self) -> dict[str, float]:
        """Minutes from the project's start to a phase's, at the least: its longest chain
        of prerequisites by estimate (how soon it could be ready if all goes to plan)."""
        top: dict[str, float] = {}
        for node in self.order:
            top[node] = max(
                (top[d] + self.estimates[d] for d in self.depends_on[node]), default=0.0
            )
        return top

    def soonest(self, done: Collection[str], running: Collection[str] = ()) -> dict[str, float]:
        """Minutes from now until each phase not done nor running could be ready, at the
        least: its longest chain of prerequisites not started yet, by estimate (running
        ones might end at any moment, so they count nothing)."""
        soonest: dict[str, float] = {}
        for node in self.order:
            if node in done or node in running:
                continue
            soonest[node] = max(
                (soonest[d] + self.estimates[d] for d in self.depends_on[node] if d in soonest),
                default=0.0,
            )
        return soonest

    def critical_path(self) -> CriticalPath:
        """The chain that bounds the makespan from below, whatever the number of machines."""
        if not self.nodes:
            return CriticalPath(0.0, ())
        bottom = self.bottom_levels()
        node = max(self.nodes, key=bottom.__getitem__)  # first of the longest, by input order
        path = [node]
        while self.dependents[node]:
            node = max(self.dependents[node], key=bottom.__getitem__)
            path.append(node)
        return CriticalPath(bottom[path[0]], tuple(path))

    def total_minutes(self) -> float:
        return sum(self.estimates.values())

    def blocked_by(self, failed: Iterable[str]) -> set[str]:
        """Every phase that can no longer run because it builds, directly or not, on `failed`."""
        seen: set[str] = set()
        queue = deque(failed)
        while queue:
            for child in self.dependents[queue.popleft()]:
                if child not in seen:
                    seen.add(child)
                    queue.append(child)
        return seen
