"""Scheduling quality: simulated makespan over the lower bound, ours against first-free.

200 random DAGs (20 to 300 phases, 2 to 20 workers with random capabilities and
slots, random estimates), each simulated with control.scheduler.assign and with
the "whichever is free" baseline; then the time to validate a 1,000-phase spec.
The last line is one JSON object with the figures (ratios over the bound
max(critical path, work / slots, work per capability / its slots)).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from control.inventory import Worker
from control.plan import Work, lower_bound, simulate
from control.scheduler import assign, assign_first_free
from control.spec import check_file

CAPABILITIES = ("linux", "docker", "gpu", "windows-files", "macos", "arm64", "big-ram")


def random_fleet(rng: random.Random) -> list[Worker]:
    workers = []
    for i in range(rng.randint(2, 20)):
        caps = frozenset(c for c in CAPABILITIES if rng.random() < 0.4)
        slots = rng.choice((1, 1, 1, 2, 2, 3, 4))
        workers.append(Worker(f"w{i}", caps, slots, "local"))
    return workers


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dags", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--repeats", type=int, default=5, help="validation runs; the median counts")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ours: list[float] = []
    fcfs: list[float] = []
    ours_tight: list[float] = []
    fcfs_tight: list[float] = []
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
        if (i + 1) % 50 == 0:
            print(
                f"{i + 1:4d} DAGs  ours mean {statistics.mean(ours):.4f}  "
                f"first-free mean {statistics.mean(fcfs):.4f}  "
                f"({time.perf_counter() - started:.0f}s)",
                file=sys.stderr,
            )
    validate_s = time_validation(1000, args.repeats)
    wins = sum(m < b - 1e-9 for m, b in zip(ours, fcfs, strict=True))
    losses = sum(m > b + 1e-9 for m, b in zip(ours, fcfs, strict=True))
    print(f"DAGs: {args.dags} (seed {args.seed}); makespan / lower bound")
    print(
        f"  critical-path scheduler: mean {statistics.mean(ours):.4f}  "
        f"p95 {percentile(ours, 0.95):.4f}  max {max(ours):.4f}"
    )
    print(
        f"  first free (baseline):   mean {statistics.mean(fcfs):.4f}  "
        f"p95 {percentile(fcfs, 0.95):.4f}  max {max(fcfs):.4f}"
    )
    print(f"  ours shorter on {wins}, longer on {losses}, equal on {args.dags - wins - losses}")
    print(
        "  over the tighter bound (adds work only a set of workers can do): "
        f"ours mean {statistics.mean(ours_tight):.4f} p95 {percentile(ours_tight, 0.95):.4f}, "
        f"first free mean {statistics.mean(fcfs_tight):.4f} "
        f"p95 {percentile(fcfs_tight, 0.95):.4f}"
    )
    print(f"validate 1,000 phases: {validate_s:.3f} s (median of {args.repeats})")
    print(
        json.dumps(
            {
                "mean_ratio": round(statistics.mean(ours), 4),
                "p95_ratio": round(percentile(ours, 0.95), 4),
                "fcfs_mean_ratio": round(statistics.mean(fcfs), 4),
                "fcfs_p95_ratio": round(percentile(fcfs, 0.95), 4),
                "validate_1000_s": round(validate_s, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
