"""Worker wake-up: enqueue-to-claim latency with inotify and with polling, and idle CPU.

A real `control worker run` process per mode. Each sample enqueues one message
(a task the worker fails at once, so the slot is free again) and reads the
message's claim time from the inbox: claimed_at - enqueued_at, both stamped by
the same machine's clock. Idle CPU is the worker's user+system time over a quiet
stretch, from /proc. Figures, never asserts.

    .venv/bin/python bench/bench_worker.py [--samples 100] [--idle-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control.localfleet import LocalFleet, WorkerShape
from control.queue import Queue

POLL_S = 0.5


def latencies(fleet: LocalFleet, samples: int) -> tuple[list[float], list[float]]:
    """Milliseconds from enqueue to claim, one message at a time; and what each enqueue's
    own durable commit took (part of the first: the floor this machine's disk sets)."""
    queue = Queue(fleet.workers["w"].queue_db, create=False)
    found, commits = [], []
    for number in range(samples):
        started = time.perf_counter()
        sent = queue.enqueue({"type": "bench", "n": number}, key=f"bench-{number}")
        commits.append((time.perf_counter() - started) * 1000)
        deadline = time.monotonic() + 10 * POLL_S + 5
        while (message := queue.show(sent.id)).claimed_at is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"message {sent.id} never claimed")
            time.sleep(0.0005)
        found.append((message.claimed_at - message.enqueued_at) * 1000)
        while queue.show(sent.id).state in ("pending", "claimed"):
            time.sleep(0.001)
        time.sleep(0.01)
    queue.close()
    return found, commits


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(root: Path, inotify: bool, samples: int, idle_s: float) -> dict[str, float]:
    fleet = LocalFleet(
        root,
        [WorkerShape("w")],
        heartbeat_seconds=5,
        lease_seconds=60,
        settings={"poll_seconds": POLL_S, "inotify": inotify},
    )
    fleet.create()
    fleet.start()
    try:
        fleet.wait_ready()
        values, commits = latencies(fleet, samples)
        result = {
            "commit_median_ms": statistics.median(commits),
            "median_ms": statistics.median(values),
            "p99_ms": sorted(values)[max(0, int(len(values) * 0.99) - 1)],
        }
        if idle_s > 0:
            process = fleet.workers["w"].process
            assert process is not None
            before, started = cpu_seconds(process.pid), time.monotonic()
            time.sleep(idle_s)
            used = cpu_seconds(process.pid) - before
            result["idle_cpu_fraction"] = used / (time.monotonic() - started)
        return result
    finally:
        fleet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        wake = run_mode(Path(tmp) / "inotify", True, args.samples, args.idle_seconds)
        poll = run_mode(Path(tmp) / "poll", False, max(10, args.samples // 5), 0)
    print(
        f"inotify: median {wake['median_ms']:.2f} ms, p99 {wake['p99_ms']:.2f} ms "
        f"({args.samples} samples; the enqueue's own commit: median "
        f"{wake['commit_median_ms']:.2f} ms)"
    )
    print(f"polling every {POLL_S:g} s: median {poll['median_ms']:.1f} ms")
    print(f"idle worker CPU: {wake.get('idle_cpu_fraction', 0) * 100:.3f}% of a core")
    print(
        json.dumps(
            {
                "wake_median_ms": round(wake["median_ms"], 3),
                "wake_p99_ms": round(wake["p99_ms"], 3),
                "commit_median_ms": round(wake["commit_median_ms"], 3),
                "poll_median_ms": round(poll["median_ms"], 3),
                "poll_interval_s": POLL_S,
                "idle_cpu_fraction": round(wake.get("idle_cpu_fraction", 0.0), 6),
                "samples": args.samples,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
