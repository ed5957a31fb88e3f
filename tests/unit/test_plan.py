"""The planner: a simulation that drives the real scheduler, and the bound it is measured by."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from control.cli import app
from control.errors import UsageError
from control.inventory import Worker, generic_workers, load_inventory
from control.plan import Work, lower_bound, plan, simulate, utilisation
from control.scheduler import assign, assign_first_free
from control.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
WEBAPP = ROOT / "specs" / "examples" / "webapp.json"
TINY = ROOT / "specs" / "examples" / "tiny.json"
EXAMPLE_FLEET = ROOT / "inventory" / "example"

runner = CliRunner()

DIAMOND = [
    Work("schema", 40),
    Work("auth", 35, ("schema",)),
    Work("tasks", 45, ("schema",)),
    Work("ui", 60, ("auth", "tasks")),
]


def test_simulation_of_a_diamond() -> None:
    two = simulate(DIAMOND, generic_workers(2))
    assert two.makespan == 145  # schema, then auth and tasks side by side, then ui
    starts = {r.phase: r.start for r in two.runs}
    assert starts == {"schema": 0, "auth": 40, "tasks": 40, "ui": 85}
    one = simulate(DIAMOND, generic_workers(1))
    assert one.makespan == 180
    assert [r.phase for r in one.runs] == ["schema", "tasks", "auth", "ui"]  # longest tail first


def test_lower_bound_terms() -> None:
    works = [
        Work("a", 60, requires=frozenset({"gpu"})),
        Work("b", 60, requires=frozenset({"gpu"})),
        Work("c", 30, pin="laptop"),
        Work("d", 10, ("a",)),
    ]
    fleet = [
        Worker("server", frozenset({"gpu"}), 1),
        Worker("laptop", frozenset(), 1),
        Worker("spare", frozenset(), 2),
    ]
    bound = lower_bound(works, fleet)
    assert bound.critical_path == 70
    assert bound.work_per_slot == 160 / 4
    assert bound.capabilities == {"gpu": 120}
    assert bound.groups == {"server": 120, "laptop": 30}
    assert (bound.minutes, bound.binding) == (120, "work needing gpu / its slots")
    assert bound.basic == 120
    assert simulate(works, fleet).makespan == 120  # the gpu phases in turn, d beside b


def test_work_only_one_machine_can_do_binds_when_it_has_several_rare_capabilities() -> None:
    works = [
        Work("arm", 50, requires=frozenset({"arm64"})),
        Work("mac", 50, requires=frozenset({"macos"})),
        Work("pinned", 50, pin="mini"),
        Work("any", 10),
    ]
    fleet = [Worker("mini", frozenset({"arm64", "macos"}), 1), Worker("pc", frozenset(), 3)]
    bound = lower_bound(works, fleet)
    assert bound.capabilities == {"arm64": 50, "macos": 50}
    assert bound.groups == {"mini": 150}
    assert (bound.minutes, bound.binding) == (150, "work only mini can do / its slots")
    assert bound.basic == 50
    assert simulate(works, fleet).makespan == 150


def test_a_phase_no_worker_can_take_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="phase 'a' can run on no worker of this fleet"):
        simulate([Work("a", 5, requires=frozenset({"gpu"}))], generic_workers(2))
    with pytest.raises(UsageError, match="on worker 'ghost'"):
        lower_bound([Work("a", 5, pin="ghost")], generic_workers(2))
    with pytest.raises(UsageError, match="no workers"):
        simulate([Work("a", 5)], [])


def test_webapp_plan_on_the_example_fleet() -> None:
    workers = load_inventory(EXAMPLE_FLEET)
    result = plan(load_spec(WEBAPP, workers), workers)
    runs = {r.phase: r for r in result.simulation.runs}
    assert runs["windows-paths"].worker == "wsl"  # the only machine with windows-files
    assert runs["schema"].worker == runs["e2e"].worker == "server"  # docker
    assert result.waves[0] == ("schema",) and result.waves[-1] == ("release",)
    assert result.critical_path == ("schema", "api-tasks", "frontend", "e2e", "release")
    assert result.bound.minutes == result.bound.critical_path == 200
    assert result.simulation.makespan >= result.bound.minutes
    assert [n for n, _ in result.sweep] == [1, 2, 3]
    assert result.sweep[0][1] == result.total_minutes  # one machine does everything in turn
    shares = utilisation(result.simulation, list(result.workers))
    assert set(shares) == {"server", "laptop", "wsl"} and all(0 <= v <= 1 for v in shares.values())


def test_interchangeable_workers_ignore_pins() -> None:
    spec = load_spec(ROOT / "tests" / "fixtures" / "specs" / "valid" / "full.json")
    result = plan(spec, None, 2)
    assert {r.worker for r in result.simulation.runs} <= {"worker-1", "worker-2"}
    assert result.fleet == "2 interchangeable"


@st.composite
def projects(draw: st.DrawFn) -> tuple[list[Work], list[Worker]]:
    labels = ["linux", "gpu", "win"]
    fleet = [
        Worker(
            f"w{i}",
            frozenset(lb for b, lb in enumerate(labels) if draw(st.integers(0, 7)) >> b & 1),
            draw(st.integers(1, 3)),
        )
        for i in range(draw(st.integers(1, 5)))
    ]
    works: list[Work] = []
    for i in range(draw(st.integers(1, 30))):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        holder = fleet[draw(st.integers(0, len(fleet) - 1))]
        requires = frozenset(c for c in sorted(holder.capabilities) if draw(st.booleans()))
        pin = holder.name if draw(st.integers(0, 9)) == 0 else None
        minutes = float(draw(st.integers(1, 120)))
        works.append(Work(f"p{i}", minutes, tuple(f"p{j}" for j in sorted(deps)), requires, pin))
    return works, fleet


@settings(max_examples=150, deadline=None)
@given(projects())
def test_simulated_schedules_are_valid_and_never_beat_the_lower_bound(
    project: tuple[list[Work], list[Worker]],
) -> None:
    works, fleet = project
    bound = lower_bound(works, fleet)
    by_id = {w.id: w for w in works}
    slots = {w.name: w for w in fleet}
    for policy in (assign, assign_first_free):
        result = simulate(works, fleet, policy)
        assert result.makespan >= bound.minutes - 1e-9
        runs = {r.phase: r for r in result.runs}
        assert sorted(runs) == sorted(by_id) and len(result.runs) == len(works)
        for run in result.runs:
            work = by_id[run.phase]
            assert run.end - run.start == pytest.approx(work.minutes)
            assert all(runs[d].end <= run.start + 1e-9 for d in work.depends_on)
            assert work.requires <= slots[run.worker].capabilities
            assert work.pin in (None, run.worker)
        edges: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for run in result.runs:
            edges[run.worker] += [(run.start, 1), (run.end, -1)]
        for name, points in edges.items():
            busy = 0
            for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts
                busy += step
                assert busy <= slots[name].slots


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_plan_with_the_example_inventory() -> None:
    code, out, err = run("plan", str(WEBAPP), "--inventory", str(EXAMPLE_FLEET))
    assert code == 0, err
    assert "tasks-webapp: 8 phases in 5 waves" in out
    assert "critical path: schema -> api-tasks -> frontend -> e2e -> release  200 min" in out
    assert "lower bound: 200 min (3h 20m), set by the critical path" in out
    assert "simulated makespan:" in out and "interchangeable machines" in out


def test_cli_plan_json_with_interchangeable_workers() -> None:
    code, out, _ = run("plan", str(TINY), "--workers", "3", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["fleet"] == "3 interchangeable" and len(data["workers"]) == 3
    assert data["waves"] == [["greeting"], ["shout"]]
    assert data["makespan_minutes"] == data["lower_bound"]["minutes"] == 4.0
    assert data["ratio"] == 1.0
    assert [r["phase"] for r in data["schedule"]] == ["greeting", "shout"]
    assert data["by_workers"] == [{"workers": 1, "makespan_minutes": 4.0}]


def test_cli_plan_defaults_to_one_machine() -> None:
    code, out, _ = run("plan", str(WEBAPP), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["makespan_minutes"] == data["total_minutes"] == 285


def test_cli_plan_errors(tmp_path: Path) -> None:
    code, _, err = run("plan", str(TINY), "-w", "2", "-i", str(EXAMPLE_FLEET))
    assert code == 2 and err.strip() == "error: give --workers N or --inventory DIR, not both"
    code, _, err = run("plan", str(TINY), "--workers", "0")
    assert code == 2 and "Invalid value for '--workers'" in err
    invalid = ROOT / "tests" / "fixtures" / "specs" / "invalid" / "cycle-two.json"
    code, _, err = run("plan", str(invalid))
    assert code == 1
    assert err.startswith(f"error: {invalid}: invalid spec: $.phases[0].depends_on: dependency")
    several = ROOT / "tests" / "fixtures" / "specs" / "invalid" / "duplicate-ids.json"
    spec = json.loads(several.read_text())
    spec["version"] = 3
    path = tmp_path / "two-errors.json"
    path.write_text(json.dumps(spec))
    code, _, err = run("plan", str(path))
    assert code == 1 and "(and 1 more; `control validate` lists them)" in err
    code, _, err = run("plan", str(tmp_path))
    assert code == 2 and "is a directory, not a spec file" in err
    pinned = ROOT / "tests" / "fixtures" / "specs" / "invalid" / "pin-unknown-worker.json"
    code, _, err = run("plan", str(pinned), "-i", str(EXAMPLE_FLEET))
    assert code == 1 and "no worker 'servr' in the inventory" in err
