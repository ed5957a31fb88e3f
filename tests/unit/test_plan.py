"""The planner: a simulation that drives the real scheduler, and the bound it is measured by."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from control.cli import app
from control.contention import speed
from control.dag import Dag
from control.errors import UsageError
from control.inventory import Worker, generic_workers, load_inventory
from control.plan import lower_bound, plan, utilisation
from control.scheduler import assign, assign_first_free
from control.simulation import Run, Work, simulate
from control.spec import load_spec
from control.sweep import interchangeable_times

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
        Worker("spare", frozenset(), 2, slot_cost=0),
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
    fleet = [
        Worker("mini", frozenset({"arm64", "macos"}), 1),
        Worker("pc", frozenset(), 3, slot_cost=0),
    ]
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
            # k phases at once on a machine each run at speed(k): its estimate, stretched
            assert _progress(run, result.runs, slots[run.worker]) == pytest.approx(work.minutes)
            assert run.ready <= run.start
            assert run.ready == max((runs[d].end for d in work.depends_on), default=0.0)
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


def _progress(run: Run, runs: Sequence[Run], worker: Worker) -> float:
    """The work `run` did between its start and end, at the speed its machine allowed."""
    there = [r for r in runs if r.worker == run.worker]
    points = sorted({run.start, run.end, *(t for r in there for t in (r.start, r.end))})
    done = 0.0
    for left, right in itertools.pairwise(points):
        if run.start <= left and right <= run.end:
            k = sum(r.start <= left and right <= r.end for r in there)
            done += (right - left) * speed(k, worker.slot_cost)
    return done


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


@settings(max_examples=150, deadline=None)
@given(projects(), st.integers(1, 6))
def test_the_sweep_shortcut_keeps_the_scheduler_s_schedule(
    project: tuple[list[Work], list[Worker]], count: int
) -> None:
    """The what-if sweep skips the full simulation on interchangeable machines: same times."""
    works, _ = project
    works = [Work(w.id, w.minutes, w.depends_on, w.requires) for w in works]
    needs = {c for w in works for c in w.requires}
    dag = Dag({w.id: w.depends_on for w in works}, {w.id: w.minutes for w in works})
    full = simulate(works, generic_workers(count, needs), dag=dag)
    quick = interchangeable_times(works, count, dag)
    assert sorted(quick) == sorted(r.phase for r in full.runs)
    for run in full.runs:
        assert (run.start, run.end) == pytest.approx(quick[run.phase])


def test_two_agents_on_one_machine_each_run_slower() -> None:
    """Contention: k agents on a machine each at 1 / (1 + cost (k - 1)) of their speed."""
    works = [Work("a", 30), Work("b", 60)]
    shared = simulate(works, [Worker("box", frozenset(), 2, slot_cost=0.5)])
    ends = {r.phase: r.end for r in shared.runs}
    assert ends["a"] == pytest.approx(45)  # 30 minutes of work at 2/3 speed
    assert ends["b"] == pytest.approx(45 + 30)  # 30 done by then, the other 30 alone
    free = simulate(works, [Worker("box", frozenset(), 2, slot_cost=0)])
    assert free.makespan == 60
    # the bound counts the machine's throughput, not its slots
    bound = lower_bound(works, [Worker("box", frozenset(), 2, slot_cost=0.5)])
    assert bound.work_per_slot == pytest.approx(90 / (2 / 1.5))


def test_the_demo_webapp_run_uses_beta() -> None:
    """The demo's fleet (control/demo.py): alpha has two slots and docker, beta is linux only.

    Seven of the eight phases went to alpha while beta idled (issue 20)."""
    fleet = [
        Worker("alpha", frozenset({"linux", "docker", "gpu"}), 2, "local"),
        Worker("beta", frozenset({"linux"}), 1, "local"),
        Worker("gamma", frozenset({"linux", "windows-files"}), 1, "local"),
    ]
    result = plan(load_spec(WEBAPP, fleet), fleet)
    on = defaultdict(list)
    for r in result.simulation.runs:
        on[r.worker].append(r.phase)
    assert len(on["beta"]) >= 2, dict(on)
    assert on["alpha"][0] == "schema" and "e2e" in on["alpha"]  # docker
    assert result.simulation.makespan == result.bound.critical_path


def test_cli_plan_shows_seconds_when_short(tmp_path: Path) -> None:
    spec = json.loads(TINY.read_text())
    spec["defaults"]["estimate_minutes"] = 0.5
    spec["phases"][1]["estimate_minutes"] = 2.25
    path = tmp_path / "short.json"
    path.write_text(json.dumps(spec))
    code, out, err = run("plan", str(path))
    assert code == 0, err
    assert "0 min" not in out
    assert "2 phases in 2 waves, 2 min 45 s of work" in out
    assert "critical path: greeting -> shout  2 min 45 s" in out
