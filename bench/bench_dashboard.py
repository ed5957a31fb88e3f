"""The dashboard under a big state database: 100 runs, and one run of 1,000 phases on
50 workers.

- run_page_ms: time to first render of the 1,000-phase run's page in headless Chromium
  (Navigation Timing: request start to the load event), median of --loads loads.
- event_to_screen_ms: with that page open, a phase's state changed in the state database
  (one transaction, one event, as the orchestrator does) until the page shows it (a
  MutationObserver notes the time); median of --events changes, p95 beside it.
- cpu_ms_per_client_min: the server process's CPU (utime + stime) with --clients live
  streams on that run while an event is written every second, minus the same window with
  no client, per client per minute.

    .venv/bin/python bench/bench_dashboard.py [--loads 5] [--events 20] [--clients 20] \
        [--seconds 20]

Figures, never asserts. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.dashboard: the server and browser the tests use

from control.jsontext import canonical_json  # noqa: E402
from control.state import StateStore  # noqa: E402
from tests.dashboard import Server, chromium, have_chromium, wait_for  # noqa: E402

PHASES = 1000
WORKERS = 50
RUNS = 100


def percentile(values: Sequence[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def build_state(path: Path, seed: int = 7) -> str:
    """100 finished runs of 8 phases, then the big run: 1,000 phases in a random DAG
    (each needs up to 3 earlier ones), a third done, 50 in flight on 50 workers."""
    rng = random.Random(seed)
    ticks = iter(range(10**9))
    start = time.time() - 100 * 3600  # a run an hour, each its own second-stamped id
    store = StateStore(path, clock=lambda: start + next(ticks) * 37.0)
    small = {
        "phases": [{"id": f"p{i}", "depends_on": [f"p{i - 1}"] if i else []} for i in range(8)]
    }
    for _ in range(RUNS):
        run_id = store.create_run(
            "specs/small.json", "h", small, [(f"p{i}", f"sa/p{i}") for i in range(8)]
        )
        with store.write() as conn:
            conn.execute(
                "UPDATE phases SET state = 'done', cost_usd = ? WHERE run_id = ?",
                (rng.random(), run_id),
            )
        store.finish_run(run_id, "done")
    phases = []
    for i in range(PHASES):
        deps = sorted({f"p{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}) if i else []
        phases.append({"id": f"p{i}", "depends_on": deps, "estimate_minutes": rng.randint(5, 60)})
    store.clock = time.time
    run_id = store.create_run(
        "specs/big.json", "h", {"phases": phases}, [(p["id"], f"sa/{p['id']}") for p in phases]
    )
    now = time.time()
    with store.write() as conn:
        for i, p in enumerate(phases):
            worker = f"w{i % WORKERS:02d}"
            if i < PHASES // 3 or i >= PHASES - WORKERS:
                state = "done" if i < PHASES // 3 else "dispatched"
                conn.execute(
                    "UPDATE phases SET state = ?, attempt = 1, worker = ?, cost_usd = ? "
                    "WHERE run_id = ? AND phase_id = ?",
                    (state, worker, rng.random(), run_id, p["id"]),
                )
                conn.execute(
                    "INSERT INTO attempts (run_id, phase_id, attempt, key, worker, message_id, "
                    "state, created_at, dispatched_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        p["id"],
                        f"{run_id}/{p['id']}/1",
                        worker,
                        i + 1,
                        state,
                        now - 600,
                        now - 590,
                    ),
                )
        for w in range(WORKERS):
            conn.execute(
                "INSERT INTO workers (name, status, last_seen, beat_at, beat_seen_at, beat_status, "
                "versions) VALUES (?, 'up', ?, ?, ?, 'busy', ?)",
                (f"w{w:02d}", now, now, now, canonical_json({"superagent": "0.1.0"})),
            )
    store.close()
    return run_id


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def run_page_ms(server: Server, run_id: str, loads: int) -> tuple[list[float], float]:
    times = []
    with chromium() as driver:
        for _ in range(loads + 1):  # the first warms the server's caches
            driver.get(f"{server.url}/runs/{run_id}")
            times.append(
                float(
                    driver.execute_script(
                        "const n = performance.getEntriesByType('navigation')[0];"
                        "return n.loadEventEnd - n.startTime;"
                    )
                )
            )
        nodes = int(
            driver.execute_script("return document.querySelectorAll('#graph a.node').length")
        )
    return times[1:], nodes


WATCH = """
window.__seen = {};
const target = document.querySelector('#graph a.node[data-phase="PHASE"]');
new MutationObserver(() => {
  window.__seen[target.dataset.state] = performance.timeOrigin + performance.now();
}).observe(target, {attributes: true, attributeFilter: ['data-state']});
"""


def event_to_screen_ms(server: Server, state: Path, run_id: str, count: int) -> list[float]:
    """Flip waiting phases to `sending` (and back) as the orchestrator records a dispatch."""
    reader = StateStore.read_only(state)
    waiting = [p for p, r in reader.phases(run_id).items() if r.state == "waiting"][:count]
    reader.close()
    writer = StateStore(state)
    latencies = []
    with chromium() as driver:
        driver.get(f"{server.url}/runs/{run_id}")
        wait_for(
            lambda: (
                driver.execute_script("return document.getElementById('live').dataset.live") == "on"
            )
        )
        for phase in waiting:
            driver.execute_script(WATCH.replace("PHASE", phase))
            time.sleep(0.3)
            before = time.time() * 1000
            writer.record_sending(run_id, phase, "w00")
            seen = wait_for(
                lambda: driver.execute_script("return window.__seen['sending'] || 0"), 10, 0.01
            )
            latencies.append(float(seen) - before)
    writer.close()
    return latencies


def _client(url: str, conns: list[http.client.HTTPConnection], counts: list[int]) -> None:
    """One page's live stream, read until the connection is shut from outside."""
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conns.append(conn)
    conn.request("GET", "/" + parts[3])
    answer = conn.getresponse()
    with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
        while line := answer.fp.readline():
            if line.startswith(b"event: snapshot"):
                counts.append(1)


def cpu_per_client(
    server: Server, state: Path, run_id: str, clients: int, seconds: float
) -> dict[str, float]:
    writer = StateStore(state)
    reader = StateStore.read_only(state)
    waiting = [p for p, r in reader.phases(run_id).items() if r.state == "waiting"]
    reader.close()

    def window(n: int) -> tuple[float, int]:
        conns: list[http.client.HTTPConnection] = []
        counts: list[int] = []
        url = f"{server.url}/stream?run={run_id}"
        threads = [
            threading.Thread(target=_client, args=(url, conns, counts), daemon=True)
            for _ in range(n)
        ]
        for t in threads:
            t.start()
        time.sleep(2)  # connected, first snapshots sent
        start = cpu_ms(server.process.pid)
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            writer.record_sending(run_id, waiting.pop(), "w01")  # one event a second
            time.sleep(1.0)
        used = cpu_ms(server.process.pid) - start
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        for t in threads:
            t.join(5)
        return used, len(counts)

    idle, _ = window(0)
    loaded, snapshots = window(clients)
    writer.close()
    per_min = 60.0 / seconds
    return {
        "idle_cpu_ms_per_min": idle * per_min,
        "loaded_cpu_ms_per_min": loaded * per_min,
        "cpu_ms_per_client_min": max(0.0, loaded - idle) * per_min / clients,
        "snapshots_received": snapshots,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if not have_chromium():
        print("bench-dashboard needs Debian's chromium and chromium-driver (make system-deps)")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.db"
        began = time.monotonic()
        run_id = build_state(state)
        print(
            f"state database: {RUNS} runs + 1 run of {PHASES} phases on {WORKERS} workers "
            f"({time.monotonic() - began:.1f} s to build)"
        )
        server = Server(state)
        try:
            loads, nodes = run_page_ms(server, run_id, args.loads)
            print(
                f"run page, {nodes} phases drawn: first render median "
                f"{statistics.median(loads):.0f} ms "
                f"(each: {', '.join(f'{t:.0f}' for t in loads)})"
            )
            latencies = event_to_screen_ms(server, state, run_id, args.events)
            print(
                f"event to screen: median {statistics.median(latencies):.0f} ms, "
                f"p95 {percentile(latencies, 95):.0f} ms over {len(latencies)} events"
            )
            cpu = cpu_per_client(server, state, run_id, args.clients, args.seconds)
            print(
                f"server CPU: idle {cpu['idle_cpu_ms_per_min']:.0f} ms/min, with {args.clients} "
                f"clients {cpu['loaded_cpu_ms_per_min']:.0f} ms/min ({cpu['snapshots_received']} "
                f"snapshots received): {cpu['cpu_ms_per_client_min']:.1f} ms per client per minute"
            )
        finally:
            server.stop()
    figures: dict[str, Any] = {
        "run_page_ms": round(statistics.median(loads), 1),
        "event_to_screen_ms": round(statistics.median(latencies), 1),
        "cpu_ms_per_client_min": round(cpu["cpu_ms_per_client_min"], 1),
        "event_to_screen_p95_ms": round(percentile(latencies, 95), 1),
        "server_idle_cpu_ms_per_min": round(cpu["idle_cpu_ms_per_min"], 1),
        "phases": PHASES,
        "workers": WORKERS,
        "runs": RUNS + 1,
        "clients": args.clients,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
