"""The phase graph: ready sets, waves, critical path, blocked phases, and cycle finding.

Hypothesis draws random graphs; an independent reachability check is the oracle.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.dag import Dag, find_cycles
from control.errors import UsageError

# schema -> api-auth, api-tasks -> frontend (a diamond), api-tasks -> docs
DIAMOND = {
    "schema": [],
    "api-auth": ["schema"],
    "api-tasks": ["schema"],
    "frontend": ["api-auth", "api-tasks"],
    "docs": ["api-tasks"],
}
MINUTES = {"schema": 40, "api-auth": 35, "api-tasks": 45, "frontend": 60, "docs": 20}


def test_ready_set_follows_what_is_done_and_running() -> None:
    dag = Dag(DIAMOND, MINUTES)
    assert dag.ready(set()) == ["schema"]
    assert dag.ready({"schema"}) == ["api-auth", "api-tasks"]
    assert dag.ready({"schema"}, running={"api-auth"}) == ["api-tasks"]
    assert dag.ready({"schema", "api-tasks"}) == ["api-auth", "docs"]
    assert dag.ready(set(DIAMOND)) == []


def test_waves_critical_path_and_bottom_levels() -> None:
    dag = Dag(DIAMOND, MINUTES)
    assert dag.waves() == [["schema"], ["api-auth", "api-tasks"], ["frontend", "docs"]]
    path = dag.critical_path()
    assert path.phases == ("schema", "api-tasks", "frontend") and path.minutes == 145
    assert dag.bottom_levels() == {
        "schema": 145,
        "api-auth": 95,
        "api-tasks": 105,
        "frontend": 60,
        "docs": 20,
    }
    assert dag.total_minutes() == 200
    assert dag.order[0] == "schema" and set(dag.order) == set(DIAMOND)


def test_a_failure_blocks_everything_built_on_it() -> None:
    dag = Dag(DIAMOND, MINUTES)
    assert dag.blocked_by(["api-tasks"]) == {"frontend", "docs"}
    assert dag.blocked_by(["schema"]) == {"api-auth", "api-tasks", "frontend", "docs"}
    assert dag.blocked_by(["frontend"]) == set()


def test_empty_graph_and_missing_estimates() -> None:
    empty = Dag({})
    assert empty.waves() == [] and empty.critical_path().phases == ()
    assert Dag({"a": [], "b": ["a"]}).critical_path().minutes == 2.0  # 1 minute each


def test_cycles_and_unknown_phases_are_refused() -> None:
    with pytest.raises(UsageError, match=r"dependency cycle: a -> b -> a"):
        Dag({"a": ["b"], "b": ["a"]})
    with pytest.raises(UsageError, match="phase 'a' depends on unknown phase 'z'"):
        Dag({"a": ["z"]})


def test_find_cycles_names_each_cycle_once_in_input_order() -> None:
    graph = {"x": [], "a": ["b"], "b": ["c"], "c": ["a", "x"], "s": ["s"], "t": ["a"]}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["s", "s"]]
    assert find_cycles({"a": ["ghost"]}) == []  # unknown phases are someone else's error


def test_a_long_chain_does_not_overflow_the_stack() -> None:
    n = 5000
    chain = {f"p{i}": [f"p{i - 1}"] if i else [] for i in range(n)}
    assert find_cycles(chain) == []
    assert len(Dag(chain).waves()) == n
    chain["p0"] = [f"p{n - 1}"]
    assert len(find_cycles(chain)[0]) == n + 1


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, float]]:
    """An acyclic graph: edges only point to phases created earlier, then names shuffled."""
    n = draw(st.integers(1, 25))
    names = draw(st.permutations([f"p{i}" for i in range(n)]))
    graph: dict[str, list[str]] = {}
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=4)) if i else set()
        graph[names[i]] = [names[j] for j in sorted(deps)]
    estimates = {name: draw(st.floats(0.5, 100)) for name in names}
    order = draw(st.permutations(list(graph)))
    return {k: graph[k] for k in order}, estimates


@settings(max_examples=150, deadline=None)
@given(dags())
def test_waves_respect_every_dependency(
    case: tuple[dict[str, list[str]], dict[str, float]],
) -> None:
    graph, estimates = case
    dag = Dag(graph, estimates)
    waves = dag.waves()
    level = {node: i for i, wave in enumerate(waves) for node in wave}
    assert sorted(level) == sorted(graph) and sum(len(w) for w in waves) == len(graph)
    for node, deps in graph.items():
        for dep in deps:
            assert level[dep] < level[node]
        if level[node]:  # not later than it must be
            assert any(level[d] == level[node] - 1 for d in deps)
    done: set[str] = set()
    for wave in waves:
        assert set(wave) <= set(dag.ready(done))
        done |= set(wave)
    position = {node: i for i, node in enumerate(dag.order)}
    assert all(position[d] < position[n] for n, deps in graph.items() for d in deps)


@settings(max_examples=150, deadline=None)
@given(dags())
def test_critical_path_is_the_longest_chain(
    case: tuple[dict[str, list[str]], dict[str, float]],
) -> None:
    graph, estimates = case
    dag = Dag(graph, estimates)
    path = dag.critical_path()
    for before, after in pairwise(path.phases):
        assert before in graph[after]
    assert path.minutes == pytest.approx(sum(estimates[p] for p in path.phases))
    longest: dict[str, float] = {}  # longest chain ending at each node, by brute force
    for node in dag.order:
        longest[node] = estimates[node] + max((longest[d] for d in graph[node]), default=0.0)
    assert path.minutes == pytest.approx(max(longest.values()))


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_blocked_by_is_every_descendant(
    case: tuple[dict[str, list[str]], dict[str, float]], data: st.DataObject
) -> None:
    graph, _ = case
    failed = data.draw(st.sets(st.sampled_from(sorted(graph)), max_size=3))
    blocked = Dag(graph).blocked_by(failed)
    for node in graph:
        assert (node in blocked) == any(_reaches(graph, node, f) for f in failed)


def _reaches(graph: dict[str, list[str]], start: str, goal: str) -> bool:
    """Whether `start` depends on `goal`, directly or not (at least one edge)."""
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, []))
    return False


@st.composite
def digraphs(draw: st.DrawFn) -> dict[str, list[str]]:
    """Any directed graph, cycles and self-loops included."""
    n = draw(st.integers(1, 12))
    names = [f"n{i}" for i in range(n)]
    return {name: draw(st.lists(st.sampled_from(names), max_size=3, unique=True)) for name in names}


@settings(max_examples=200, deadline=None)
@given(digraphs())
def test_every_cycle_is_found(graph: dict[str, list[str]]) -> None:
    cycles = find_cycles(graph)
    on_a_cycle = {n for n in graph if _reaches(graph, n, n)}
    assert (cycles == []) == (on_a_cycle == set())
    covered: set[str] = set()
    for cycle in cycles:
        assert cycle[0] == cycle[-1] and len(set(cycle[:-1])) == len(cycle) - 1
        for node, dep in pairwise(cycle):
            assert dep in graph[node]
        # one cycle per strongly connected component: no two reported cycles share one
        component = {
            n for n in graph if _reaches(graph, n, cycle[0]) and _reaches(graph, cycle[0], n)
        }
        assert not component & covered
        covered |= component
    assert covered == on_a_cycle
    if not cycles:
        Dag(graph)  # acyclic: the graph builds
    else:
        with pytest.raises(UsageError, match="dependency cycle"):
            Dag(graph)


def test_top_levels_and_how_soon_phases_could_be_ready() -> None:
    dag = Dag(
        {"schema": [], "api": ["schema"], "ui": ["schema"], "e2e": ["api", "ui"]},
        {"schema": 40, "api": 35, "ui": 45, "e2e": 40},
    )
    assert dag.top_levels() == {"schema": 0, "api": 40, "ui": 40, "e2e": 85}
    assert dag.soonest(done=()) == dag.top_levels()
    # schema done, api running (it may end any moment), ui not started: e2e waits for ui
    assert dag.soonest(done={"schema"}, running={"api"}) == {"ui": 0, "e2e": 45}


def test_a_wide_graph_is_ordered_in_linear_time() -> None:
    """10,000 independent phases: the topological order took minutes (a sort per step)."""
    wide = Dag({f"p{i}": [] for i in range(10_000)})
    assert wide.order[:3] == ("p0", "p1", "p2") and len(wide.order) == 10_000
