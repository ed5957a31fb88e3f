"""Notifications: event-to-delivery latency to a local webhook, and what the notifier
costs the orchestrator's tick.

Latency: events are written to a real state database at random gaps; the real
notifier (one thread per sink) delivers them to a local HTTP receiver (stdlib
http.server on 127.0.0.1) that verifies each signature; a notice's latency is from its
event's `at` to its arrival. Tick overhead: a real Orchestrator ticking over local
inboxes (polls, heartbeats, a phase in flight), with a background writer adding events
in both modes; wall time per tick with the notifier running minus without, in
interleaved blocks, median of the per-block differences.

    .venv/bin/python bench/bench_notify.py [--events 300] [--ticks 40] [--rounds 30]

Figures, never asserts. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.fakes.services: the receiver the tests use

from control.demo import seed_remote  # noqa: E402
from control.events import read as read_events  # noqa: E402
from control.inventory import Worker  # noqa: E402
from control.notify.config import load_config  # noqa: E402
from control.notify.service import Notifier  # noqa: E402
from control.orchestrator import Orchestrator, Settings  # noqa: E402
from control.queue import Queue  # noqa: E402
from control.spec import load_spec  # noqa: E402
from control.state import StateStore  # noqa: E402
from control.transport import Transports  # noqa: E402
from tests.fakes.services import Receiver  # noqa: E402

SECRET = "bench-notify-key-0123456789"
ENV = "SUPERAGENT_BENCH_NOTIFY_KEY"


def percentile(values: Sequence[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def webhook(receiver: Receiver, **options: Any) -> Any:
    sink = {"name": "hook", "type": "webhook", "url": receiver.url + "/hook", "secret_env": ENV}
    return load_config({"sinks": [sink | options]}, "bench")


def latency(root: Path, events: int) -> list[float]:
    """Event-to-delivery, with a webhook's default grouping (group_s 0.25, min_interval_s 0.2)."""
    receiver = Receiver(SECRET.encode())
    state = root / "latency.db"
    store = StateStore(state)
    rng = random.Random(7)
    try:
        with Notifier(state, webhook(receiver)):
            for _ in range(events):
                store.event(None, "worker_down", worker="w1", detail={"reason": "bench"})
                time.sleep(rng.uniform(0.0, 0.05))
            deadline = time.monotonic() + 30
            while len(receiver.dedupe_keys()) < events and time.monotonic() < deadline:
                time.sleep(0.05)
        written = {f"hook/{e.id}": e.at for e in read_events(store.conn, limit=-1)}
        return [
            (arrived - written[n["dedupe_key"]]) * 1000
            for arrived, document in receiver.arrivals
            for n in document["notices"]
        ]
    finally:
        store.close()
        receiver.down()


def orchestrator(root: Path, workers: int) -> Orchestrator:
    remote = root / "origin.git"
    seed = root / "seed"
    seed.mkdir()
    (seed / "README.md").write_text("seed\n")
    seed_remote(remote, seed)
    fleet = []
    for i in range(workers):
        db = root / f"w{i}.db"
        with Queue(db) as queue:
            queue.beat(f"w{i}", "idle", versions={"node": "20"})
        fleet.append(
            Worker(f"w{i}", frozenset({"linux"}), 1, "local", vars={"superagent_queue_db": str(db)})
        )
    spec_path = root / "spec.json"
    spec_path.write_text(
        json.dumps(
            {
                "version": 1,
                "name": "bench",
                "repo": {"url": str(remote), "base_branch": "main", "branch_prefix": "sa"},
                "phases": [
                    {
                        "id": "api",
                        "title": "API",
                        "task": "Write api.txt.",
                        "deliverables": ["api.txt"],
                        "verify": ["test -f api.txt"],
                    }
                ],
            }
        )
    )
    spec = load_spec(spec_path, fleet)
    store = StateStore(root / "state.db")
    run_id = store.create_run(str(spec_path), "h", spec.to_dict(), [("api", "sa/api")])
    orch = Orchestrator(
        spec, fleet, store, Transports(), Settings(heartbeat_timeout_s=3600), repo_url=str(remote)
    )
    orch.attach(run_id)
    return orch


def tick_overhead(root: Path, ticks: int, rounds: int) -> dict[str, float]:
    """Median wall and thread-CPU ms per tick without and with the notifier running,
    and the median of the per-round differences (wall: GIL and lock waits included)."""
    receiver = Receiver(SECRET.encode())
    orch = orchestrator(root, 5)
    orch.tick()  # dispatches the phase; later ticks are the steady state
    stop = threading.Event()

    def writer() -> None:  # events flow in both modes: the notifier has work to do
        store = StateStore(orch.store.path)
        while not stop.wait(0.02):
            store.event(orch.run_id, "phase_stuck", "api", None, {"reason": "bench"})
        store.close()

    background = threading.Thread(target=writer, daemon=True)
    background.start()

    def block() -> tuple[float, float]:
        wall, cpu = [], []
        for _ in range(ticks):
            start, start_cpu = time.perf_counter(), time.thread_time()
            orch.tick()
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.thread_time() - start_cpu) * 1000)
        return statistics.median(wall), statistics.median(cpu)

    rows: list[tuple[float, float, float, float]] = []
    try:
        for number in range(rounds):  # which mode goes first alternates
            if number % 2:
                with Notifier(orch.store.path, webhook(receiver, kinds=["phase_stuck"])):
                    on = block()
                off = block()
            else:
                off = block()
                with Notifier(orch.store.path, webhook(receiver, kinds=["phase_stuck"])):
                    on = block()
            rows.append((off[0], on[0], off[1], on[1]))
    finally:
        stop.set()
        background.join()
        orch.transports.close()
        orch.store.close()
        receiver.down()
    return {
        "off_ms": statistics.median(r[0] for r in rows),
        "on_ms": statistics.median(r[1] for r in rows),
        "wall_diff_ms": statistics.median(r[1] - r[0] for r in rows),
        "cpu_off_ms": statistics.median(r[2] for r in rows),
        "cpu_on_ms": statistics.median(r[3] for r in rows),
        "cpu_diff_ms": statistics.median(r[3] - r[2] for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    import os  # noqa: PLC0415

    os.environ[ENV] = SECRET
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        root = Path(tmp)
        values = latency(root, args.events)
        median, p99 = statistics.median(values), percentile(values, 99)
        print(
            f"event→delivery (webhook, group_s 0.25, min_interval_s 0.2): median {median:.1f} ms"
            f"   p99 {p99:.1f} ms   (n={len(values)} of {args.events})"
        )
        (root / "tick").mkdir()
        tick = tick_overhead(root / "tick", args.ticks, args.rounds)
        print(
            f"tick (5 local workers, wall): {tick['off_ms']:.2f} ms without the notifier, "
            f"{tick['on_ms']:.2f} ms with it; difference {tick['wall_diff_ms']:.3f} ms "
            f"(median of {args.rounds} interleaved rounds of {args.ticks} ticks)"
        )
        print(
            f"tick (thread CPU): {tick['cpu_off_ms']:.2f} ms without, {tick['cpu_on_ms']:.2f} ms "
            f"with; difference {tick['cpu_diff_ms']:.3f} ms"
        )
        diff = tick["wall_diff_ms"]
    print(
        json.dumps(
            {
                "notify_median_ms": round(median, 1),
                "notify_p99_ms": round(p99, 1),
                "tick_overhead_ms": round(diff, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
