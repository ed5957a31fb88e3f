"""Crash test of the inbox: producers, consumers and an acknowledger on one file, with a
random one SIGKILLed and restarted at least every 0.5 s.

Each process appends what it was told to its own history file (O_APPEND, written
before it acts further), and the checker compares the histories with the final
database: lost = an acknowledged enqueue that never finished; duplicated_accepted
= a message with two accepted results; unexpected = a done message nobody sent.
Re-executions (a message claimed again after its worker died) are counted, not
hidden. `PRAGMA integrity_check` runs after every kill.

Usage: python tests/chaos/queue_chaos.py --seconds 20 [--dir DIR]
The last line printed is one JSON object; the exit code is 0 only when it is clean.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere
from control.queue import Queue

LEASE_S = 1.0
MAX_ATTEMPTS = 50


def _history(path: Path) -> Any:
    return path.open("a", buffering=1, encoding="utf-8")


def _read_history(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    # a process killed inside write() may leave a torn last line: ignore it
    return [line.split(" ") for line in lines if line.endswith(" .")]


# -- roles (run in child processes) ---------------------------------------------


def run_producer(db: Path, name: str, history: Path, stop: Path) -> None:
    queue = Queue(db, create=False)
    events = _read_history(history)
    intents = [e[1] for e in events if e[0] == "intent"]
    acked = {e[1] for e in events if e[0] == "enqueued"}
    seq = len(intents)
    # A client that crashed before hearing the answer sends the same request again.
    retry = [k for k in intents if k not in acked][-1:]
    with _history(history) as log:
        while not stop.exists():
            if retry:
                key = retry.pop()
            else:
                key = f"{name}-{seq}"
                seq += 1
                log.write(f"intent {key} .\n")
            result = queue.enqueue({"key": key, "work": random.random()}, key=key)
            log.write(f"enqueued {key} {result.id} {int(result.duplicate)} .\n")
            time.sleep(random.uniform(0, 0.02))


def run_consumer(db: Path, name: str, history: Path, stop: Path) -> None:
    queue = Queue(db, create=False)
    with _history(history) as log:
        while True:
            claimed = queue.claim(name, LEASE_S)
            if claimed is None:
                time.sleep(0.01)
                continue
            log.write(f"claimed {claimed.id} {claimed.fence} {claimed.payload['key']} .\n")
            time.sleep(random.uniform(0, 0.03))
            result = queue.complete(
                claimed.id, claimed.fence, {"key": claimed.payload["key"], "by": name}
            )
            log.write(f"completed {claimed.id} {claimed.fence} {int(result.accepted)} .\n")


def run_acker(db: Path, name: str, history: Path, stop: Path) -> None:
    queue = Queue(db, create=False)
    with _history(history) as log:
        while True:
            found = queue.responses(limit=50)
            for message in found:
                log.write(f"result {message.id} {message.state} .\n")
            if found:
                queue.ack(*(m.id for m in found))
                log.write(f"acked {' '.join(str(m.id) for m in found)} .\n")
            else:
                time.sleep(0.02)


ROLES = {"producer": run_producer, "consumer": run_consumer, "acker": run_acker}


# -- the parent: spawn, kill, restart, check ------------------------------------------


class Fleet:
    def __init__(self, workdir: Path, producers: int, consumers: int) -> None:
        self.workdir = workdir
        self.db = workdir / "queue.db"
        self.stop = workdir / "stop-producers"
        self.names = (
            [f"producer-{i}" for i in range(producers)]
            + [f"consumer-{i}" for i in range(consumers)]
            + ["acker-0"]
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        role = name.split("-", maxsplit=1)[0]
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                role,
                "--name",
                name,
                "--db",
                str(self.db),
                "--history",
                str(self.workdir / f"{name}.history"),
                "--stop",
                str(self.stop),
            ],
            cwd=Path(__file__).resolve().parents[2],
        )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def drained(db: Path, workdir: Path) -> bool:
    """Every acknowledged enqueue is finished and its response acknowledged."""
    keys = {e[1] for p in workdir.glob("producer-*.history") for e in _read_history(p)
            if e[0] == "enqueued"}  # fmt: skip
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT key, state, acked_at FROM messages").fetchall()
    finally:
        conn.close()
    settled = {key for key, state, acked in rows if state not in {"pending", "claimed"} and acked}
    return keys <= settled


def check(db: Path, workdir: Path, kills: int, integrity_results: list[str]) -> dict[str, Any]:
    histories = {p.stem: _read_history(p) for p in workdir.glob("*.history")}
    intents: set[str] = set()
    enqueued: set[str] = set()
    accepted: dict[int, int] = {}
    claims: dict[int, int] = {}
    for events in histories.values():
        for event in events:
            if event[0] == "intent":
                intents.add(event[1])
            elif event[0] == "enqueued":
                enqueued.add(event[1])
            elif event[0] == "claimed":
                claims[int(event[1])] = claims.get(int(event[1]), 0) + 1
            elif event[0] == "completed" and event[3] == "1":
                accepted[int(event[1])] = accepted.get(int(event[1]), 0) + 1
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    rows = {row["key"]: row for row in conn.execute("SELECT * FROM messages")}
    by_id = {row["id"]: row for row in rows.values()}
    stale = conn.execute("SELECT COUNT(*) FROM stale_results").fetchone()[0]
    conn.close()
    finished = ("done", "failed", "dead", "cancelled")
    lost = sorted(k for k in enqueued if k not in rows or rows[k]["state"] not in finished)
    unexpected = sorted(
        k for k, row in rows.items() if row["state"] == "done" and k not in intents
    ) + sorted(str(i) for i in accepted if i not in by_id)
    wrong_response = sorted(
        k for k, row in rows.items()
        if row["state"] == "done" and json.loads(row["response"])["key"] != k
    )  # fmt: skip
    bad_integrity = [r for r in integrity_results if r != "ok"]
    return {
        "lost": len(lost),
        "duplicated_accepted": sum(1 for n in accepted.values() if n > 1),
        "unexpected": len(unexpected) + len(wrong_response),
        "reexecuted": sum(1 for row in rows.values() if row["attempts"] > 1),
        "kills": kills,
        "integrity": "ok" if not bad_integrity else bad_integrity[0],
        "integrity_checks": len(integrity_results),
        "enqueued": len(enqueued),
        "done": sum(1 for row in rows.values() if row["state"] == "done"),
        "dead": sum(1 for row in rows.values() if row["state"] == "dead"),
        "stale_results": stale,
        "claims": sum(claims.values()),
        "examples": {"lost": lost[:5], "unexpected": unexpected[:5]},
    }


def chaos(
    seconds: float, workdir: Path, producers: int, consumers: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    Queue(workdir / "queue.db").close()
    fleet = Fleet(workdir, producers, consumers)
    for name in fleet.names:
        fleet.start(name)
    kills, checks = 0, []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.5))
            victim = rng.choice(fleet.names)
            fleet.kill(victim)
            kills += 1
            checks.append(integrity(fleet.db))
            fleet.start(victim)
        fleet.stop.touch()  # producers finish; consumers and acker drain what was sent
        drain_deadline = time.monotonic() + 60
        while time.monotonic() < drain_deadline and not drained(fleet.db, workdir):
            time.sleep(0.2)
    finally:
        fleet.stop_all()
    checks.append(integrity(fleet.db))
    return check(fleet.db, workdir, kills, checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--history", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        ROLES[args.role](args.db, args.name, args.history, args.stop)
        return 0
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    with tempfile.TemporaryDirectory(prefix="queue-chaos-", dir=args.dir) as tmp:
        result = chaos(args.seconds, Path(tmp), args.producers, args.consumers, seed)
    result["seed"] = seed
    print(
        f"{result['kills']} kills in {args.seconds:g} s; {result['enqueued']} enqueued, "
        f"{result['done']} done, {result['claims']} claims, {result['reexecuted']} re-executed, "
        f"{result['stale_results']} stale results, {result['dead']} dead"
    )
    keys = ("lost", "duplicated_accepted", "unexpected", "reexecuted", "kills", "integrity")
    summary = {k: result[k] for k in keys}
    print(json.dumps({**summary, "detail": result}))
    clean = not (summary["lost"] or summary["duplicated_accepted"] or summary["unexpected"])
    return 0 if clean and summary["integrity"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
