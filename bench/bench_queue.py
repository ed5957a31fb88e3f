"""Queue throughput: superagent's inbox against huey, litequeue and persist-queue.

One run, one disk: for each system, enqueue/s and claim+complete/s (its full
consumer cycle) with 1 and with N processes, every system at synchronous=FULL
in WAL mode, every message checked to be processed exactly once (by the ids the
consumers report and by the rows left in the database). Plus the disk's rate of
single-row synchronous=FULL commits, the bound on any queue that commits twice
per message. Prints a table, then, as its very last line, one JSON object. The queues
themselves, each behind one adapter, are in bench/queue_systems.py.

    .venv/bin/python bench/bench_queue.py [--messages 1000] [--rounds 3] [--processes 4]
                                          [--dir PATH] [--systems a,b] [--limit-seconds 2]

Figures, never asserts. The machine may be shared and its disk noisy, so the run
is split into rounds in which the systems take turns (in a rotated order), each
figure is the messages of all its rounds over their summed time, and the disk
probe is sampled before each round and at the end (its median is the limit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from queue_systems import SYSTEMS
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
PHASE_TIMEOUT_S = 600.0
PEERS = ("huey", "litequeue", "persist_queue")


# -- running a phase in worker processes ----------------------------------------------------


def _run_task(
    system: str, path: str, role: str, numbers: Sequence[int], barrier: Any | None
) -> dict[str, Any]:
    """One process's part of a phase: open its own connection, wait for the others, run."""
    adapter = SYSTEMS[system](Path(path))
    adapter.open()
    mode = adapter.mode()
    if barrier is not None:
        barrier.wait(timeout=PHASE_TIMEOUT_S)
    start = time.monotonic()
    processed: list[int] = []
    if role == "enqueue":
        for n in numbers:
            adapter.enqueue(n)
            processed.append(n)
    else:
        while (n := adapter.consume()) is not None:
            processed.append(n)
    end = time.monotonic()
    adapter.close()
    return {"ok": True, "start": start, "end": end, "processed": processed, "mode": mode}


def _worker_loop(inbox: Any, barrier: Any, out: Any) -> None:
    """A pool process: run the phases it is sent until it is sent None."""
    while (task := inbox.get()) is not None:
        system, path, role, numbers, together = task
        try:
            out.put(_run_task(system, path, role, numbers, barrier if together else None))
        except BaseException:
            if together:
                with contextlib.suppress(Exception):
                    barrier.abort()
            out.put({"ok": False, "error": traceback.format_exc()})


@dataclass
class Phase:
    elapsed: float
    processed: list[int]
    mode: str


class Pool:
    """`size` spawned processes kept for the whole run (spawning is not what is measured).

    A phase runs on the first process alone or on all of them, released together
    by a barrier once each has opened its own connection.
    """

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.size = size
        self.barrier = ctx.Barrier(size)
        self.out = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(size)]
        self.procs = [
            ctx.Process(
                target=_worker_loop, args=(inbox, self.barrier, self.out), name=f"bench-{k}"
            )
            for k, inbox in enumerate(self.inboxes)
        ]
        for proc in self.procs:
            proc.start()

    def run(self, system: str, path: Path, role: str, messages: int, processes: int) -> Phase:
        if processes not in (1, self.size):
            raise ValueError(f"a phase runs on 1 or {self.size} processes, not {processes}")
        together = processes > 1
        for k in range(processes):
            numbers = list(range(k, messages, processes))
            self.inboxes[k].put((system, os.fspath(path), role, numbers, together))
        reports = [self.out.get(timeout=PHASE_TIMEOUT_S) for _ in range(processes)]
        errors = [r["error"] for r in reports if not r["ok"]]
        if errors:
            raise RuntimeError(f"{system} {role} x{processes} failed:\n" + "\n".join(errors))
        # From the first process let through the barrier to the last one done.
        elapsed = max(r["end"] for r in reports) - min(r["start"] for r in reports)
        processed = [n for r in reports for n in r["processed"]]
        return Phase(elapsed, processed, reports[0]["mode"])

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exactly_once(processed: Sequence[int], messages: int) -> tuple[bool, int, int]:
    """(every message once, duplicates, missing)."""
    counts = Counter(processed)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    missing = sum(1 for n in range(messages) if n not in counts)
    stray = sum(1 for n in counts if not 0 <= n < messages)
    return duplicates == 0 and missing == 0 and stray == 0, duplicates, missing


@dataclass
class SystemResult:
    """Messages and seconds summed over the rounds, per figure; checks ANDed over the rounds."""

    messages: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    duplicates: int = 0
    missing: int = 0
    mode: str = ""

    def add(self, key: str, phase: Phase) -> None:
        self.messages[key] = self.messages.get(key, 0) + len(phase.processed)
        self.seconds[key] = self.seconds.get(key, 0.0) + phase.elapsed

    def figures(self) -> dict[str, float]:
        return {
            key: self.messages[key] / self.seconds[key] if self.seconds[key] > 0 else 0.0
            for key in self.messages
        }


def bench_round(
    pool: Pool,
    system: str,
    root: Path,
    messages: int,
    process_counts: Sequence[int],
    result: SystemResult,
) -> None:
    """One round of one system: per process count, a fresh database, enqueue all, consume all."""
    for nprocs in process_counts:
        suffix = "" if nprocs == 1 else f"_{nprocs}p"
        work = Path(tempfile.mkdtemp(prefix=f"{system}-{nprocs}p-", dir=root))
        adapter = SYSTEMS[system](work)
        adapter.create()
        enq = pool.run(system, work, "enqueue", messages, nprocs)
        ok_enq, dup, miss = exactly_once(enq.processed, messages)
        result.add(f"enqueue_per_s{suffix}", enq)
        con = pool.run(system, work, "consume", messages, nprocs)
        ok_con, dup_c, miss_c = exactly_once(con.processed, messages)
        ok_db = adapter.verify(messages)
        result.add(f"claim_complete_per_s{suffix}", con)
        key = f"{nprocs}p"
        result.checks[key] = result.checks.get(key, True) and ok_enq and ok_con and ok_db
        result.duplicates += dup + dup_c
        result.missing += miss + miss_c
        result.mode = con.mode
        shutil.rmtree(work, ignore_errors=True)


def full_commit_rate(root: Path, seconds: float) -> float:
    """Single-row INSERTs, each its own transaction, WAL + synchronous=FULL: commits/s."""
    path = root / f"commit-limit-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(os.fspath(path), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        count, start = 0, time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            conn.execute("INSERT INTO t (v) VALUES ('x')")
            count += 1
        return count / elapsed
    finally:
        conn.close()


@contextlib.contextmanager
def bench_dir(requested: str | None, keep: bool) -> Iterator[Path]:
    """A fresh directory on the disk under test (default: next to the repo), removed after."""
    if requested:
        parent = Path(requested)
        parent.mkdir(parents=True, exist_ok=True)
    else:
        parent = REPO
    root = Path(tempfile.mkdtemp(prefix=".bench-queue-", dir=parent))
    try:
        yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=1000, help="messages per phase and round (default 1000)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds; the systems take turns in each, so a burst of noise hits them all",
    )
    parser.add_argument("--processes", type=int, default=4, help="processes of the multi runs")
    parser.add_argument("--dir", help="directory on the disk under test (default: the repo's)")
    parser.add_argument(
        "--limit-seconds",
        type=float,
        default=2.0,
        help="total duration of the FULL-commit probe, split before each round and at the end",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {', '.join(SYSTEMS)}",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or args.messages < 1 or args.processes < 2 or args.rounds < 1:
        parser.error(
            f"unknown systems {unknown}" if unknown else "messages, rounds >= 1, processes >= 2"
        )

    console = Console(stderr=False, soft_wrap=False)
    began = time.monotonic()
    with bench_dir(args.dir, args.keep) as root, Pool(args.processes) as pool:
        console.print(
            f"[bold]queue benchmark[/bold]: {args.rounds} rounds x {args.messages} messages per "
            f"phase, 1 and {args.processes} processes, in {root} (SQLite {sqlite3.sqlite_version})"
        )
        results: dict[str, SystemResult] = {system: SystemResult() for system in systems}
        probe_s = args.limit_seconds / (args.rounds + 1)
        limits: list[float] = []
        for rnd in range(args.rounds):
            limits.append(full_commit_rate(root, probe_s))
            order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
            t0 = time.monotonic()
            for system in order:
                counts = (1,) if system == "superagent_all_full" else (1, args.processes)
                bench_round(pool, system, root, args.messages, counts, results[system])
            console.print(f"  round {rnd + 1}/{args.rounds}: {time.monotonic() - t0:.1f} s")
        limits.append(full_commit_rate(root, probe_s))
    limit = statistics.median(limits)

    summary: dict[str, Any] = {}
    for system, res in results.items():
        for key, value in res.figures().items():
            summary[f"{system}_{key}"] = round(value, 1)
    summary["full_commit_limit_per_s"] = round(limit, 1)
    summary["full_commit_limit_samples_per_s"] = [round(x, 1) for x in limits]
    ours = summary.get("superagent_claim_complete_per_s")
    summary["superagent_vs_limit"] = round(ours / (limit / 2), 3) if ours and limit else None
    summary["exactly_once"] = all(all(r.checks.values()) for r in results.values())
    summary["exactly_once_by_system"] = {s: r.checks for s, r in results.items()}
    summary["duplicates"] = {s: r.duplicates for s, r in results.items()}
    summary["missing"] = {s: r.missing for s, r in results.items()}
    summary["modes"] = {s: r.mode for s, r in results.items()}
    peer_rates = [
        summary[f"{p}_claim_complete_per_s{sfx}"]
        for p in PEERS
        for sfx in ("", f"_{args.processes}p")
        if f"{p}_claim_complete_per_s{sfx}" in summary
    ]
    if ours is not None and peer_rates:
        ours_4p = summary.get(f"superagent_claim_complete_per_s_{args.processes}p", 0.0)
        summary["target_at_or_above_peers"] = all(
            summary.get(f"superagent_claim_complete_per_s{sfx}", 0.0)
            >= summary.get(f"{p}_claim_complete_per_s{sfx}", 0.0)
            for p in PEERS
            for sfx in ("", f"_{args.processes}p")
        )
        summary["target_80pct_of_limit"] = (summary["superagent_vs_limit"] or 0) >= 0.8
        summary[f"superagent_claim_complete_per_s_{args.processes}p_vs_limit"] = (
            round(ours_4p / (limit / 2), 3) if limit else None
        )
    summary["messages"] = args.messages
    summary["rounds"] = args.rounds
    summary["processes"] = args.processes
    summary["sqlite_version"] = sqlite3.sqlite_version
    summary["elapsed_s"] = round(time.monotonic() - began, 1)

    p = args.processes
    table = Table(title=f"messages/s ({args.rounds} rounds x {args.messages} messages per phase)")
    table.add_column("system")
    headings = ("enqueue\n1p", f"enqueue\n{p}p", "claim+\ncomplete 1p", f"claim+\ncomplete {p}p")
    for heading in headings:
        table.add_column(heading, justify="right")
    table.add_column("exactly\nonce")

    def cell(key: str) -> str:
        return f"{summary[key]:,.0f}" if key in summary else "-"

    for system, res in results.items():
        table.add_row(
            SYSTEMS[system].label,
            cell(f"{system}_enqueue_per_s"),
            cell(f"{system}_enqueue_per_s_{p}p"),
            cell(f"{system}_claim_complete_per_s"),
            cell(f"{system}_claim_complete_per_s_{p}p"),
            "yes" if all(res.checks.values()) else f"NO (dup {res.duplicates}, miss {res.missing})",
        )
    console.print(table)
    console.print("[bold]configuration[/bold] (as read back from each system's connection):")
    for system, res in results.items():
        console.print(f"  {SYSTEMS[system].label}: {res.mode}")
    console.print(
        f"disk: {limit:,.0f} single-row FULL commits/s (median of samples "
        f"{', '.join(f'{x:,.0f}' for x in limits)}), so {limit / 2:,.0f} messages/s at two "
        "FULL commits per message"
    )
    if ours is not None:
        console.print(
            f"superagent claim+complete 1p = {summary['superagent_vs_limit']:.2f} x that bound "
            f"(target >= 0.80); at or above every peer: {summary.get('target_at_or_above_peers')}"
        )
    sys.stdout.flush()
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
