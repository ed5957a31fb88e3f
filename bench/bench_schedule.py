"""Scheduling quality: simulated makespan over the lower bound, ours against first-free.

200 random DAGs (20 to 300 phases, 2 to 20 workers with random capabilities and
slots, random estimates), each simulated with control.scheduler.assign and with
the "whichever is free" baseline, slots not interfering; then the same graphs and
fleets with contention (k agents on a machine each at 1 / (1 + 0.5 (k - 1)) speed)
and a scarce capability, on one or two machines, that late phases need, simulated
with `assign` and with the scheduler as it was before (bench/baseline_scheduler.py).
Then the time to validate a 1,000-phase spec and to plan 10,000 phases (wide, deep
and in between; the slowest counts, in CPU seconds). The last line is one JSON object with the
figures (ratios over the bound max(critical path, work / slots, work per capability
/ its slots), slots counted at their throughput under contention).

rare_idle_when_needed_share: of the phases only the scarce machines can run, the
share that waited while a scarce machine ran a phase another machine could have run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from baseline_scheduler import assign_before_contention

from control.inventory import Worker
from control.plan import lower_bound, plan
from control.scheduler import assign, assign_first_free
from control.simulation import Policy, Simulation, Work, simulate
from control.spec import check_file, load_spec

CAPABILITIES = ("linux", "docker", "gpu", "windows-files", "macos", "arm64", "big-ram")
SCARCE = "scarce"
CONTENTION = 0.5  # the slot cost of every machine in the contention runs


def random_fleet(rng: random.Random) -> list[Worker]:
    workers = []
    for i in range(rng.randint(2, 20)):
        caps = frozenset(c for c in CAPABILITIES if rng.random() < 0.4)
        slots = rng.choice((1, 1, 1, 2, 2, 3, 4))
        workers.append(Worker(f"w{i}", caps, slots, "local", slot_cost=0.0))
    return workers


def with_contention(
    rng: random.Random, works: list[Work], workers: list[Worker]
) -> tuple[list[Work], list[Worker]]:
    """The same graph and fleet with contention, and a scarce capability needed late.

    One machine in ten (at least one) gets SCARCE; a fifth of the last third of the
    phases need it (and nothing else, so the scarce machines can always run them).
    """
    holders = set(rng.sample(range(len(workers)), max(1, len(workers) // 10)))
    fleet = [
        dataclasses.replace(
            w,
            capabilities=w.capabilities | ({SCARCE} if i in holders else set()),
            slot_cost=CONTENTION,
        )
        for i, w in enumerate(workers)
    ]
    late = len(works) * 2 // 3
    graph = [
        dataclasses.replace(w, requires=frozenset({SCARCE}), pin=None)
        if i >= late and rng.random() < 0.2
        else w
        for i, w in enumerate(works)
    ]
    return graph, fleet


def rare_waits(result: Simulation, works: list[Work], workers: list[Worker]) -> tuple[int, int]:
    """(phases only scarce machines can run, those of them that waited while a scarce
    machine ran a phase some other machine could have run)."""
    rare = {w.name for w in workers if SCARCE in w.capabilities}
    common_ok = {
        w.id
        for w in works
        if any(
            w.requires <= m.capabilities and w.pin in (None, m.name)
            for m in workers
            if m.name not in rare
        )
    }
    runs = {r.phase: r for r in result.runs}
    only_rare = [w.id for w in works if w.id not in common_ok]
    stolen = [r for r in result.runs if r.worker in rare and r.phase in common_ok]
    waited = 0
    for phase in only_rare:
        run = runs[phase]
        if run.start > run.ready + 1e-9 and any(
            r.start < run.start and r.end > run.ready for r in stolen
        ):
            waited += 1
    return len(only_rare), waited


def random_dag(rng: random.Random, workers: list[Worker]) -> list[Work]:
    """A layered random DAG: each phase depends on 0-3 of the recent phases before it."""
    n = rng.randint(20, 300)
    window = rng.randint(3, 60)  # small windows make deep chains, large ones wide waves
    edge_p = rng.uniform(0.2, 0.9)
    works: list[Work] = []
    for i in range(n):
        ids = [w.id for w in works[max(0, i - window) :]]
        deps = (
            tuple(sorted(set(rng.sample(ids, min(len(ids), rng.randint(1, 3))))))
            if (ids and rng.random() < edge_p)
            else ()
        )
        requires: frozenset[str] = frozenset()
        pin = None
        if rng.random() < 0.4:
            holder = rng.choice(workers)
            if holder.capabilities:
                k = rng.randint(1, min(2, len(holder.capabilities)))
                requires = frozenset(rng.sample(sorted(holder.capabilities), k))
        if rng.random() < 0.03:
            pin = rng.choice([w.name for w in workers if requires <= w.capabilities])
        minutes = round(min(240.0, max(2.0, rng.lognormvariate(3.2, 0.8))), 1)
        works.append(Work(f"p{i}", minutes, deps, requires, pin))
    return works


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def big_spec(n: int) -> dict[str, object]:
    phases = []
    for i in range(n):
        phase: dict[str, object] = {
            "id": f"phase-{i}",
            "title": f"Phase {i}",
            "task": f"Implement module {i} of the service with unit tests and a short README.",
            "deliverables": [f"src/module_{i}.py", f"tests/test_module_{i}.py"],
            "verify": [f"python -m pytest -q tests/test_module_{i}.py"],
            "depends_on": [f"phase-{j}" for j in sorted({i // 2, i // 3}) if j < i],
            "requires": ["linux"] if i % 3 else ["linux", "docker"],
            "estimate_minutes": 10 + i % 50,
        }
        phases.append(phase)
    return {
        "version": 1,
        "name": "big",
        "repo": {"url": "git@git.example.com:team/big.git"},
        "defaults": {"agent": {"model": "sonnet"}, "max_attempts": 2},
        "phases": phases,
    }


def time_validation(n: int, repeats: int = 5) -> float:
    fleet = [
        Worker("server", frozenset({"linux", "docker"}), 2),
        Worker("laptop", frozenset({"linux"}), 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        path.write_text(json.dumps(big_spec(n)))
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            report = check_file(path, fleet)
            times.append(time.perf_counter() - started)
            assert report.ok(), report.errors[:3]
    return statistics.median(times)


def wide_and_deep_specs(n: int) -> dict[str, dict[str, object]]:
    """`big_spec(n)` as it is (in between), with no dependencies (wide), and as one chain."""
    between = big_spec(n)
    wide = json.loads(json.dumps(between))
    deep = json.loads(json.dumps(between))
    for phase in wide["phases"]:  # type: ignore[attr-defined]
        phase["depends_on"] = []
    for i, phase in enumerate(deep["phases"]):  # type: ignore[arg-type]
        phase["depends_on"] = [f"phase-{i - 1}"] if i else []
    return {"wide": wide, "deep": deep, "between": between}


def write_specs(directory: Path, n: int) -> dict[str, Path]:
    """The files of `wide_and_deep_specs(n)`, per shape. The documents are dropped on
    return: `control plan` holds no other spec, and each full pass of the garbage
    collector walks all the process holds (three more specs made it a fifth slower)."""
    paths = {}
    for shape, document in wide_and_deep_specs(n).items():
        paths[shape] = directory / f"{shape}.json"
        paths[shape].write_text(json.dumps(document))
    return paths


def time_plans(n: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (CPU seconds, wall seconds) of what `control plan` does with a spec file:
    load it (read, schema, rules) and plan it, per shape of graph. CPU time is the
    figure: this machine is shared, and its wall clock also counts the other sessions'
    work."""
    fleet = [
        Worker("server", frozenset({"linux", "docker"}), 2),
        Worker("laptop", frozenset({"linux"}), 1),
    ]
    seconds: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_specs(Path(tmp), n)
        gc.collect()  # what making the documents left over is not `control plan`'s cost
        for shape, path in paths.items():
            cpu, wall = [], []
            for _ in range(repeats):
                started = (time.process_time(), time.perf_counter())
                plan(load_spec(path, fleet), fleet)
                cpu.append(time.process_time() - started[0])
                wall.append(time.perf_counter() - started[1])
            seconds[shape] = (statistics.median(cpu), statistics.median(wall))
    return seconds


def summary(name: str, ratios: list[float]) -> str:
    return (
        f"  {name:<25} mean {statistics.mean(ratios):.4f}  "
        f"p95 {percentile(ratios, 0.95):.4f}  max {max(ratios):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dags", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--repeats", type=int, default=5, help="validation runs; the median counts")
    parser.add_argument("--plan-phases", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ours: list[float] = []
    fcfs: list[float] = []
    ours_tight: list[float] = []
    fcfs_tight: list[float] = []
    contended: dict[str, list[float]] = {"ours": [], "before": [], "fcfs": []}
    rare: dict[str, list[int]] = {"ours": [0, 0], "before": [0, 0]}
    policies: dict[str, Policy] = {
        "ours": assign,
        "before": assign_before_contention,
        "fcfs": assign_first_free,
    }
    # Timed first, in a process as fresh as `control plan`'s: after the DAGs below, the
    # collector walks their leftovers too, which no command pays.
    validate_s = time_validation(1000, args.repeats)
    plans = time_plans(args.plan_phases, max(1, min(args.repeats, 3)))
    started = time.perf_counter()
    for i in range(args.dags):
        workers = random_fleet(rng)
        works = random_dag(rng, workers)
        bound = lower_bound(works, workers)
        mine = simulate(works, workers, assign).makespan
        base = simulate(works, workers, assign_first_free).makespan
        assert min(mine, base) >= bound.minutes - 1e-6, (i, mine, base, bound)
        # The figures use the bound: critical path, work / slots, per capability.
        ours.append(mine / bound.basic)
        fcfs.append(base / bound.basic)
        # ... and the tighter one `control plan` shows (work only a set of workers can do).
        ours_tight.append(mine / bound.minutes)
        fcfs_tight.append(base / bound.minutes)
        # The same graph and fleet with contention and a scarce capability needed late;
        # its own random numbers, so the figures above stay those of the same graphs.
        late_works, busy_workers = with_contention(random.Random(args.seed + i), works, workers)
        late_bound = lower_bound(late_works, busy_workers)
        for name, policy in policies.items():
            result = simulate(late_works, busy_workers, policy)
            assert result.makespan >= late_bound.minutes - 1e-6, (i, name, result, late_bound)
            contended[name].append(result.makespan / late_bound.basic)
            if name in rare:
                only_rare, waited = rare_waits(result, late_works, busy_workers)
                rare[name][0] += only_rare
                rare[name][1] += waited
        if (i + 1) % 50 == 0:
            print(
                f"{i + 1:4d} DAGs  ours mean {statistics.mean(ours):.4f}  "
                f"first-free mean {statistics.mean(fcfs):.4f}  "
                f"with contention: ours {statistics.mean(contended['ours']):.4f} "
                f"before {statistics.mean(contended['before']):.4f}  "
                f"({time.perf_counter() - started:.0f}s)",
                file=sys.stderr,
            )
    wins = sum(m < b - 1e-9 for m, b in zip(ours, fcfs, strict=True))
    losses = sum(m > b + 1e-9 for m, b in zip(ours, fcfs, strict=True))
    share = {name: waited / max(1, total) for name, (total, waited) in rare.items()}
    print(f"DAGs: {args.dags} (seed {args.seed}); makespan / lower bound")
    print(summary("critical-path scheduler:", ours))
    print(summary("first free (baseline):", fcfs))
    print(f"  ours shorter on {wins}, longer on {losses}, equal on {args.dags - wins - losses}")
    print(
        "  over the tighter bound (adds work only a set of workers can do): "
        f"ours mean {statistics.mean(ours_tight):.4f} p95 {percentile(ours_tight, 0.95):.4f}, "
        f"first free mean {statistics.mean(fcfs_tight):.4f} "
        f"p95 {percentile(fcfs_tight, 0.95):.4f}"
    )
    print(f"with contention (slot cost {CONTENTION}) and a scarce capability needed late:")
    print(summary("ours:", contended["ours"]))
    print(summary("before (2026-11-29):", contended["before"]))
    print(summary("first free:", contended["fcfs"]))
    for name, (total, waited) in rare.items():
        print(
            f"  {name}: {waited} of {total} phases only scarce machines can run waited "
            f"while one ran other work ({share[name]:.3f})"
        )
    print(f"validate 1,000 phases: {validate_s:.3f} s (median of {args.repeats})")
    print(
        f"load and plan {args.plan_phases:,} phases, CPU (wall) seconds: "
        + ", ".join(f"{shape} {cpu:.3f} ({wall:.3f})" for shape, (cpu, wall) in plans.items())
    )
    print(
        json.dumps(
            {
                "mean_ratio": round(statistics.mean(ours), 4),
                "p95_ratio": round(percentile(ours, 0.95), 4),
                "fcfs_mean_ratio": round(statistics.mean(fcfs), 4),
                "fcfs_p95_ratio": round(percentile(fcfs, 0.95), 4),
                "contention_mean_ratio": round(statistics.mean(contended["ours"]), 4),
                "before_contention_mean_ratio": round(statistics.mean(contended["before"]), 4),
                "fcfs_contention_mean_ratio": round(statistics.mean(contended["fcfs"]), 4),
                "rare_idle_when_needed_share": round(share["ours"], 4),
                "before_rare_idle_when_needed_share": round(share["before"], 4),
                "validate_1000_s": round(validate_s, 4),
                "plan_10000_s": round(max(cpu for cpu, _ in plans.values()), 4),
                "plan_10000_wall_s": round(max(wall for _, wall in plans.values()), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
