"""A year of history: nothing a user does slows down as runs, attempts and events pile up.

Builds a state database holding a year of daily use (by default 10,000 runs, 500,000
attempts, 5 million events, spread over 365 days) and inboxes holding a year of
acknowledged responses, then times what a user does every day against it:
`control status` and `control runs` (in-process, without interpreter start-up),
`control health`'s work (a poll of the three workers' year-old inboxes, the answers
stored and the cancels delivered against the state database), the dashboard's run page
and its runs list (the handlers as a request runs them, without HTTP), one dispatch tick
of a live run on three local workers (each against the same on an empty database), and
`control gc` with the default retention (180 days).

    .venv/bin/python bench/bench_history.py [--runs 10000] [--dir PATH] [--samples 20]

Figures, never asserts. The last line is one JSON object:
{"status_ms", "runs_ms", "tick_ms", "empty_tick_ms", "state_db_mb", "gc_s", "health_ms",
"run_page_ms", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import typer  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from starlette.requests import Request  # noqa: E402

from control.cli import app  # noqa: E402
from control.demo import seed_remote  # noqa: E402
from control.inventory import Worker  # noqa: E402
from control.operations import fleet_health  # noqa: E402
from control.orchestrator import Orchestrator, Settings  # noqa: E402
from control.queue import Queue  # noqa: E402
from control.spec import load_spec  # noqa: E402
from control.state import StateStore  # noqa: E402
from control.transport import Transports  # noqa: E402
from control.transport.local import LocalTransport  # noqa: E402
from control.web.app import Config, Dashboard  # noqa: E402

DAY = 86400.0
PHASES_PER_RUN = 20
ATTEMPTS_PER_RUN = 50
EVENTS_PER_RUN = 500
EVENT_KINDS = ("sending", "dispatched", "phase_done", "phase_retry", "worker_up", "rate_limited")


def fill_history(path: Path, runs: int, *, now: float, seed: int = 7) -> None:
    """Write `runs` finished runs over the past 365 days straight into the database."""
    StateStore(path).close()  # the schema, at the current version
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")  # a fixture, not a measurement
    conn.execute("BEGIN")
    for n in range(runs):
        created = now - 365 * DAY + n * (365 * DAY / runs)
        run_id = f"r{n:08d}-hist"
        conn.execute(
            "INSERT INTO runs (id, spec_path, spec_hash, spec, status, created_at, finished_at) "
            "VALUES (?, ?, 'h', '{}', ?, ?, ?)",
            (run_id, f"/specs/project-{n % 40}.json", rng.choice(("done", "failed")),
             created, created + 3600),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO phases (run_id, phase_id, state, attempt, branch, commit_sha, "
            "cost_usd, updated_at) VALUES (?, ?, 'done', 2, ?, ?, 0.4, ?)",
            [(run_id, f"p{i}", f"sa/p{i}", "c" * 40, created) for i in range(PHASES_PER_RUN)],
        )
        conn.executemany(
            "INSERT INTO attempts (run_id, phase_id, attempt, key, worker, state, created_at, "
            "finished_at, response) VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?)",
            [
                (run_id, f"p{i % PHASES_PER_RUN}", i // PHASES_PER_RUN + 1,
                 f"{run_id}/p{i % PHASES_PER_RUN}/{i // PHASES_PER_RUN + 1}", f"w{i % 3 + 1}",
                 created, created + 60, '{"state":"done"}')
                for i in range(ATTEMPTS_PER_RUN)
            ],
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO events (run_id, at, kind, phase_id, worker, detail) "
            "VALUES (?, ?, ?, ?, ?, '{\"attempt\":1}')",
            [
                (run_id, created + i, EVENT_KINDS[i % len(EVENT_KINDS)],
                 f"p{i % PHASES_PER_RUN}", f"w{i % 3 + 1}")
                for i in range(EVENTS_PER_RUN)
            ],
        )  # fmt: skip
        if n % 500 == 499:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def fill_inbox(path: Path, messages: int, *, now: float) -> None:
    """An inbox with a year of acknowledged answers."""
    Queue(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO messages (key, content_hash, payload, state, attempts, max_attempts, "
        "enqueued_at, finished_at, response, acked_at) "
        "VALUES (?, ?, '{}', 'done', 1, 2, ?, ?, '{\"status\":\"done\"}', ?)",
        [
            (f"old/{i}", f"h{i}", now - DAY * 365 * (1 - i / messages), now - DAY, now - DAY)
            for i in range(messages)
        ],
    )
    conn.execute("COMMIT")
    conn.close()


class TickRig:
    """A live run of the web-app's size on three in-process local workers."""

    def __init__(self, root: Path, state: Path, inbox_history: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        remote = root / "origin.git"
        seed = root / "seed"
        seed.mkdir()
        (seed / "README.md").write_text("seed\n")
        seed_remote(remote, seed)
        now = time.time()
        self.queues: dict[str, Queue] = {}
        workers = []
        for name in ("w1", "w2", "w3"):
            db = root / f"{name}.db"
            fill_inbox(db, inbox_history, now=now)
            self.queues[name] = Queue(db)
            workers.append(
                Worker(
                    name, frozenset({"linux"}), 1, "local", vars={"superagent_queue_db": str(db)}
                )
            )
        spec_path = root / "spec.json"
        phases = [
            {"id": f"p{i}", "title": f"P{i}", "task": "Do it.", "deliverables": [f"p{i}.txt"],
             "depends_on": [f"p{i - 1}"] if i else []}
            for i in range(8)
        ]  # fmt: skip
        spec_path.write_text(
            json.dumps(
                {"name": "bench", "version": 1, "repo": {"url": str(remote)}, "phases": phases}
            )
        )
        spec = load_spec(spec_path, workers)
        self.workers = workers
        self.state = state
        self.store = StateStore(state)
        self.run_id = run_id = self.store.create_run(
            str(spec_path), "h", spec.to_dict(), [(p.id, p.branch) for p in spec.phases]
        )
        self.orchestrator = Orchestrator(
            spec,
            workers,
            self.store,
            Transports({"local": LocalTransport}),
            Settings(),
            repo_url=str(remote),
        )
        self.orchestrator.attach(run_id)

    def tick_once_ms(self) -> float:
        for name, queue in self.queues.items():
            queue.beat(name, "busy")
        started = time.perf_counter()
        self.orchestrator.tick()
        return (time.perf_counter() - started) * 1000

    def health_ms(self, samples: int) -> float:
        """`control health`'s work: every worker polled, answers stored, cancels sent."""
        transports = self.orchestrator.transports
        return timed_ms(lambda: fleet_health(self.workers, transports, self.state), samples)

    def page_ms(self, path: str, samples: int) -> float:
        """A dashboard page, its handler run as a request runs it (read-only connection,
        the page's data, its template rendered), without HTTP."""
        dashboard = Dashboard(Config(state=self.state))
        handler = dashboard.run if path.startswith("/runs/") else dashboard.runs
        params = {"run_id": path.removeprefix("/runs/")} if handler == dashboard.run else {}

        def get() -> None:
            scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
                     "headers": [], "path_params": params}  # fmt: skip
            response = asyncio.run(handler(Request(scope)))
            if response.status_code != 200:
                raise SystemExit(f"dashboard {path}: {response.status_code}")

        return timed_ms(get, samples)

    def close(self) -> None:
        self.orchestrator.transports.close()
        self.store.close()
        for queue in self.queues.values():
            queue.close()


def timed_ms(action: Callable[[], Any], samples: int) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def cli(*args: str) -> Callable[[], None]:
    """A command run in-process: the command tree is built once (Typer's start-up is
    the same whatever the history), so what is timed is the command's own work."""
    runner = CliRunner()
    command = typer.main.get_command(app)

    def run() -> None:
        result = runner.invoke(command, list(args))
        if result.exit_code != 0:
            raise SystemExit(f"control {' '.join(args)} failed: {result.output}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--inbox-history", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-history-", dir=args.dir))
    try:
        now = time.time()
        empty = TickRig(root / "empty", root / "empty" / "state.db", 0)
        state = root / "year" / "state.db"
        state.parent.mkdir(parents=True)
        started = time.perf_counter()
        fill_history(state, args.runs, now=now)
        built_s = time.perf_counter() - started
        year = TickRig(root / "year", state, args.inbox_history)  # the live run, newest
        # The fixture was written without fsync: flush it now, or the first checkpoint's
        # fsync would pay for writing the whole history and be counted as a tick.
        os.sync()
        # Ticks on the empty and on the year-old database alternate, so that whatever
        # else the machine does weighs on both alike; the first (dispatching) is skipped.
        year.tick_once_ms(), empty.tick_once_ms()
        pairs = [(year.tick_once_ms(), empty.tick_once_ms()) for _ in range(args.samples)]
        tick = statistics.median(p[0] for p in pairs)
        empty_tick = statistics.median(p[1] for p in pairs)
        health_ms, empty_health_ms = (r.health_ms(args.samples) for r in (year, empty))
        run_page_ms, empty_run_page_ms = (
            r.page_ms(f"/runs/{r.run_id}", args.samples) for r in (year, empty)
        )
        old_run_page_ms = year.page_ms(f"/runs/r{args.runs - 1:08d}-hist", args.samples)
        runs_page_ms = year.page_ms("/", args.samples)
        empty.close()
        status_ms = timed_ms(cli("status", "--state", str(state), "--json"), args.samples)
        runs_ms = timed_ms(cli("runs", "--state", str(state), "--json"), args.samples)
        spec_ms = timed_ms(lambda: year.store.latest_run("/specs/project-7.json"), args.samples)
        size_mb = sum(p.stat().st_size for p in state.parent.glob("state.db*")) / 1e6
        started = time.perf_counter()
        pruned = year.store.gc(180)
        gc_s = time.perf_counter() - started
        after_status = timed_ms(cli("status", "--state", str(state), "--json"), args.samples)
        year.close()
        counts = {
            "runs": args.runs,
            "attempts": args.runs * ATTEMPTS_PER_RUN,
            "events": args.runs * EVENTS_PER_RUN,
            "inbox_messages": args.inbox_history,
        }
        print(f"history: {counts} built in {built_s:.1f}s; state.db {size_mb:.0f} MB")
        print(f"control status {status_ms:.1f} ms (after gc {after_status:.1f} ms)")
        print(f"control runs {runs_ms:.1f} ms; latest run of a spec {spec_ms:.2f} ms")
        print(f"control health {health_ms:.1f} ms (empty database {empty_health_ms:.1f} ms)")
        print(
            f"dashboard: the live run's page {run_page_ms:.1f} ms (empty database "
            f"{empty_run_page_ms:.1f} ms), a finished run's {old_run_page_ms:.1f} ms, "
            f"the runs list {runs_page_ms:.1f} ms"
        )
        print(f"dispatch tick {tick:.2f} ms (empty database {empty_tick:.2f} ms)")
        print(f"gc 180 days: {pruned.runs} runs, {pruned.events} events in {gc_s:.1f}s")
        print(
            json.dumps(
                {
                    "status_ms": round(status_ms, 2),
                    "runs_ms": round(runs_ms, 3),
                    "tick_ms": round(tick, 3),
                    "empty_tick_ms": round(empty_tick, 3),
                    "tick_ratio": round(tick / empty_tick, 3),
                    "health_ms": round(health_ms, 2),
                    "empty_health_ms": round(empty_health_ms, 2),
                    "run_page_ms": round(run_page_ms, 2),
                    "empty_run_page_ms": round(empty_run_page_ms, 2),
                    "old_run_page_ms": round(old_run_page_ms, 2),
                    "runs_page_ms": round(runs_page_ms, 2),
                    "state_db_mb": round(size_mb, 1),
                    "gc_s": round(gc_s, 2),
                    "gc_runs": pruned.runs,
                    "status_after_gc_ms": round(after_status, 2),
                    **counts,
                }
            )
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
