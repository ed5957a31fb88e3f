"""A run's phase graph laid out for drawing: phases in columns by dependency depth
(the DAG's waves), ordered in each column near their prerequisites, edges as curves,
the critical path marked. Done here in Python and drawn as server-side SVG, so the
page needs no layout library and no JavaScript build (docs/dashboard.md says why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control.dag import Dag

NODE_W = 168
NODE_H = 46
GAP_X = 56
GAP_Y = 14
PAD = 12


@dataclass(frozen=True)
class Node:
    id: str
    x: int
    y: int
    critical: bool


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str  # an SVG path: numbers and letters only, never agent text
    critical: bool


@dataclass(frozen=True)
class Layout:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int
    critical_minutes: float


def layout(depends_on: Mapping[str, Sequence[str]], estimates: Mapping[str, float]) -> Layout:
    """Positions for every phase and edge. Linear in phases and edges (one barycentre
    pass per column), so a run of 1,000 phases lays out in milliseconds."""
    dag = Dag(depends_on, estimates)
    critical = dag.critical_path()
    on_path = set(critical.phases)
    path_edges = set(zip(critical.phases, critical.phases[1:], strict=False))
    row: dict[str, float] = {}
    column: dict[str, int] = {}
    for wave_index, wave in enumerate(dag.waves()):
        # Near the average row of its prerequisites: fewer crossings, at no real cost.
        def weight(node: str) -> float:
            deps = [row[d] for d in dag.depends_on[node] if d in row]
            return sum(deps) / len(deps) if deps else 0.0

        for index, node in enumerate(sorted(wave, key=weight)):
            row[node] = index
            column[node] = wave_index
    nodes = tuple(
        Node(
            id=node,
            x=PAD + column[node] * (NODE_W + GAP_X),
            y=PAD + int(row[node]) * (NODE_H + GAP_Y),
            critical=node in on_path,
        )
        for node in dag.nodes
    )
    at = {n.id: n for n in nodes}
    edges = []
    for target, deps in dag.depends_on.items():
        for source in dict.fromkeys(deps):
            a, b = at[source], at[target]
            x1, y1 = a.x + NODE_W, a.y + NODE_H // 2
            x2, y2 = b.x, b.y + NODE_H // 2
            bend = (x2 - x1) // 2
            edges.append(
                Edge(
                    source,
                    target,
                    f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}",
                    (source, target) in path_edges,
                )
            )
    width = max((n.x for n in nodes), default=0) + NODE_W + PAD
    height = max((n.y for n in nodes), default=0) + NODE_H + PAD
    return Layout(nodes, tuple(edges), width, height, critical.minutes)
