"""Chaos run of `control dispatch`: the web-app example on three local workers, repeated,
with the orchestrator and the workers killed, frozen and cut off at random moments.

Each run seeds a bare git remote with the example project, starts three real
`control worker run` processes (each in its own session) and a real
`control dispatch` subprocess with the replay agent and short timings. The
orchestrator reaches the inboxes over the ssh transport through a real sshd on
127.0.0.1, so a transport failure is a real one: the sshd and every session under
it are killed for a moment and started again (without root or sshd the local
transport is used and no call is failed). During the run, at seeded random moments
(in the first seconds after the first dispatch, and all before the last phase is accepted):

- the orchestrator's process tree is SIGKILLed and the same command resumes it;
- a worker's process tree is SIGKILLed (a lost machine) and started again after a
  random delay, or only once the state database shows its attempt written off;
- a worker's process tree is SIGSTOPped for a while, then SIGCONTed (a blip);
- the sshd is down for a moment (calls fail: counted from the state database's
  failed polls and the orchestrator's `send_failed` events).

After the run has finished, every worker is running again and the same command is
run once more (a "later command that reaches" the workers), then the checker reads
the state database, every inbox and the remote: the run finished and merged; each
phase has exactly one accepted (`done`) attempt; each accepted commit is in the
integration branch and still at the head of its phase branch; every response of
one of the run's attempts that an inbox shows acknowledged is recorded in the state
database (acknowledged and not stored = lost; not yet acknowledged = unread, shown
but not counted); no phase or attempt is left in flight, and no written-off attempt
is still pending or claimed, without a cancel request, in a live worker's inbox
(both counted as `left_in_flight`).

A run that does not finish before the deadline is wedged: everything is killed and
its directory kept. Directories of runs with a violation are kept too; the paths
are printed.

Usage: python tests/chaos/dispatch_chaos.py --runs 5 [--seed N] [--dir DIR]
The last line printed is one JSON object; the exit code is 0 only when it is clean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
from control.demo import EXAMPLES, seed_remote  # noqa: E402
from control.localfleet import LocalFleet, WorkerShape  # noqa: E402
from tests.sshd import Sshd, sshd_problem  # noqa: E402
from tests.support import descendants  # noqa: E402

SPEC = EXAMPLES / "webapp.json"
REPLAY = EXAMPLES / "replay" / "webapp"
WORKERS = (
    WorkerShape("alpha", ("linux", "docker", "gpu"), slots=2),
    WorkerShape("beta", ("linux",)),
    WorkerShape("gamma", ("linux", "windows-files")),
)
IN_FLIGHT = ("sending", "dispatched")
FINISHED = ("done", "failed", "dead", "cancelled")
SUMMARY_KEYS = (
    "runs",
    "finished",
    "wedged",
    "kills_orchestrator",
    "kills_worker",
    "stops_worker",
    "failed_calls",
    "phase_done_twice",
    "accepted_missing_from_integration",
    "lost_responses",
    "left_in_flight",
)


@dataclass(frozen=True)
class Timings:
    """Short on purpose: one run takes well under a minute on two cores."""

    poll_interval_s: float = 0.2
    heartbeat_timeout_s: float = 3.0
    retry_backoff_s: float = 0.5
    worker_heartbeat_s: float = 0.5
    worker_lease_s: float = 5.0
    chaos_window_s: float = 15.0  # chaos lands in the first seconds after the first dispatch,
    # and at the latest when the run reaches its last phase
    deadline_s: float = 240.0  # a run not finished by then is wedged (a run under chaos
    # takes 40-100 s on the shared 2-core machine, the merge's verify commands alone 10-35 s)
    same_failure_limit: int = 5  # resumes that all fail the same way: wedged already


@dataclass
class Tally:
    """What one run did and what the checker found."""

    seed: int
    directory: str
    finished: bool = False
    wedged: bool = False
    kills_orchestrator: int = 0
    kills_worker: int = 0
    stops_worker: int = 0
    outages: int = 0
    failed_calls: int = 0
    orchestrator_exits: list[str] = field(default_factory=list)  # non-zero exits, last line
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# -- processes ------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class Proc:
    """A child in its own session whose whole tree can be killed or frozen."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.command = command
        self.log = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.frozen: list[int] = []

    def start(self) -> None:
        self._out = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and everything below it (agents run in sessions of
        their own, so the process group alone would not reach them)."""
        if self.popen is None:
            return
        _signal_all(_tree(self.popen.pid), signal.SIGKILL)
        self.popen.wait()
        self._close()

    def freeze(self) -> None:
        assert self.popen is not None
        self.frozen = _tree(self.popen.pid)
        _signal_all(self.frozen, signal.SIGSTOP)

    def thaw(self) -> None:
        _signal_all(self.frozen, signal.SIGCONT)
        self.frozen = []

    def terminate(self, timeout_s: float = 20.0) -> None:
        if self.popen is None:
            return
        if self.frozen:
            self.thaw()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        _signal_all(descendants(self.popen.pid), signal.SIGKILL)
        self._close()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def cut_sshd(sshd: Sshd) -> None:
    """Take the server down with every connection: SIGKILL its own processes, the listener
    and one per session, so each call in flight fails at once; SIGTERM what runs under the
    sessions. Not SIGKILL there: a login shell may be inside `pyenv rehash`, whose lock
    file a SIGKILL would leave behind, hanging every later ssh session on the machine for
    a minute each (its EXIT trap removes the lock on SIGTERM)."""
    assert sshd.process is not None
    below = descendants(sshd.process.pid)
    own = [pid for pid in below if _comm(pid) == "sshd"]
    _signal_all([sshd.process.pid, *own], signal.SIGKILL)
    _signal_all([pid for pid in below if pid not in own], signal.SIGTERM)
    sshd.process.wait()
    sshd.process = None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# -- reading the databases --------------------------------------------------------------


def _read(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts (columns by name: the schemas may grow), read-only, tolerant of a
    database that does not exist yet."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, args)]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _git(remote: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(remote), *args], capture_output=True, text=True, check=False
    )


def schedule(seed: int, timings: Timings) -> list[tuple[float, str]]:
    """A run's chaos: (seconds after the first dispatch, kind), in order; at least one
    orchestrator kill and two worker kills or stops. The same for a seed whichever the
    transport (a run without sshd skips its outages)."""
    rng = random.Random(seed)
    kinds = ["kill_orchestrator"] * rng.randint(1, 3)
    kinds += ["kill_worker"] * rng.randint(1, 2)
    kinds += ["stop_worker"] * rng.randint(1, 2)
    kinds += ["outage"] * rng.randint(1, 2)
    return sorted((rng.uniform(0.5, timings.chaos_window_s), kind) for kind in kinds)


# -- one run ------------------------------------------------------------------------------


class ChaosRun:
    def __init__(
        self, workdir: Path, seed: int, timings: Timings, sshd: Sshd | None, env: dict[str, str]
    ) -> None:
        self.dir = workdir
        self.seed = seed
        self.rng = random.Random(f"{seed}/victims")  # and delays; the schedule has its own
        self.timings = timings
        self.sshd = sshd
        self.env = env
        self.tally = Tally(seed, str(workdir))
        self.remote = workdir / "origin.git"
        self.state = workdir / "state.db"
        self.fleet = LocalFleet(
            workdir / "fleet",
            WORKERS,
            heartbeat_seconds=timings.worker_heartbeat_s,
            lease_seconds=timings.worker_lease_s,
        )
        self.workers: dict[str, Proc] = {}
        self.orchestrator: Proc | None = None
        self.orchestrator_starts = 0
        self.restarts: list[tuple[float, str, bool]] = []  # (not before, worker, await write-off)
        self.thaws: list[tuple[float, str]] = []  # (when, worker)
        self.sshd_back_at: float | None = None

    # setup

    def setup(self) -> None:
        seed_remote(self.remote, EXAMPLES / "seed" / "webapp")
        self.fleet.create()
        if self.sshd is not None:
            self._ssh_inventory()
        for name, worker in self.fleet.workers.items():
            self.workers[name] = Proc(
                [sys.executable, "-m", "control", "worker", "run", "--config", str(worker.config)],
                worker.log,
                self.env,
            )

    def _ssh_inventory(self) -> None:
        """The fleet's inventory, with the orchestrator reaching each inbox over ssh."""
        assert self.sshd is not None
        for worker in self.fleet.workers.values():
            values = self.sshd.worker(worker.name, worker.queue_db).vars
            lines = ["superagent_transport: ssh\n"] + [
                f"{k}: {json.dumps(v)}\n" for k, v in sorted(values.items())
            ]
            lines += [
                f"superagent_capabilities: {json.dumps(list(worker.shape.capabilities))}\n",
                f"superagent_slots: {worker.shape.slots}\n",
            ]
            path = self.fleet.inventory / "host_vars" / f"{worker.name}.yml"
            path.write_text("---\n" + "".join(lines))

    def command(self) -> list[str]:
        t = self.timings
        return [
            sys.executable,
            "-m",
            "control",
            "dispatch",
            str(SPEC),
            "--inventory",
            str(self.fleet.inventory),
            "--state",
            str(self.state),
            "--repo",
            str(self.remote),
            "--agent",
            "replay",
            "--replay-dir",
            str(REPLAY),
            "--poll-interval",
            str(t.poll_interval_s),
            "--heartbeat-timeout",
            str(t.heartbeat_timeout_s),
            "--retry-backoff",
            str(t.retry_backoff_s),
            "--json",
        ]

    def start_orchestrator(self) -> None:
        self.orchestrator_starts += 1
        log = self.dir / f"dispatch-{self.orchestrator_starts:02d}.log"
        self.orchestrator = Proc(self.command(), log, self.env)
        self.orchestrator.start()

    def wait_ready(self, names: list[str], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        for name in names:
            db = self.fleet.workers[name].queue_db
            while not _read(db, "SELECT 1 FROM heartbeats WHERE worker_id = ?", (name,)):
                if not self.workers[name].alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} did not start; see {self.workers[name].log}")
                time.sleep(0.05)

    # the schedule

    def _schedule(self) -> list[tuple[float, str]]:
        events = schedule(self.seed, self.timings)
        return [e for e in events if e[1] != "outage" or self.sshd is not None]

    def busy_workers(self) -> list[str]:
        rows = _read(self.state, "SELECT worker, state FROM attempts")
        return sorted({r["worker"] for r in rows if r["state"] in IN_FLIGHT})

    def _victim(self, exclude: set[str]) -> str | None:
        live = [n for n, p in self.workers.items() if p.alive() and not p.frozen]
        live = [n for n in live if n not in exclude]
        busy = [n for n in self.busy_workers() if n in live]
        pool = busy if busy and self.rng.random() < 0.8 else live
        return self.rng.choice(pool) if pool else None

    # the run

    def run(self) -> Tally:
        t0 = time.monotonic()
        sampling = threading.Event()
        sampler = threading.Thread(target=self._sample_failed_polls, args=(sampling,), daemon=True)
        try:
            self.setup()
            for proc in self.workers.values():
                proc.start()
            self.wait_ready(list(self.workers))
            self.start_orchestrator()
            sampler.start()
            if self._drive(t0, self._schedule()):
                self._settle()
            else:
                self.tally.wedged = True
                self.tally.checks = check(self.state, self.remote, self.fleet, self.alive_workers())
        finally:
            sampling.set()
            if sampler.is_alive():
                sampler.join()
            self.tally.failed_calls += self._send_failures()
            self._stop_all()
            self.tally.seconds = round(time.monotonic() - t0, 1)
        return self.tally

    def _drive(self, t0: float, events: list[tuple[float, str]]) -> bool:
        """Chaos until the orchestrator exits 0 on a done run (True) or the run is
        wedged (False): past the deadline, or every resume fails the same way."""
        deadline = t0 + self.timings.deadline_s
        chaos_t0: float | None = None
        while True:
            now = time.monotonic()
            if now > deadline:
                return False
            assert self.orchestrator is not None
            if not self.orchestrator.alive():
                if self._orchestrator_exited() == 0 and self._run_status() == "done":
                    return True
                if self._stuck():
                    return False
                time.sleep(1.0)  # what a user does: run the same command again
                self.start_orchestrator()
            if chaos_t0 is None and _read(self.state, "SELECT 1 FROM attempts LIMIT 1"):
                chaos_t0 = now  # the schedule starts with the first dispatch
            if chaos_t0 is not None and events and self._at_last_phase():
                # chaos lands while the run is in progress: what is still scheduled is due
                # now, before the last phase is accepted and the run merges (a fast run
                # would otherwise finish before a late moment and escape the chaos)
                events = [(min(at, now - chaos_t0), kind) for at, kind in events]
            while events and chaos_t0 is not None and now - chaos_t0 >= events[0][0]:
                if events[0][1] == "outage" and not self._orchestrator_ticking():
                    events[0] = (events[0][0] + 0.5, "outage")  # a cut nobody calls through
                    break
                self._chaos(events.pop(0)[1])
            self._recover(now)
            time.sleep(0.05)

    def _recover(self, now: float) -> None:
        """Restart, thaw, reconnect what is due."""
        for item in list(self.restarts):
            not_before, name, wait_write_off = item
            written_off = not wait_write_off or self._written_off(name)
            if now >= not_before and (written_off or now > not_before + 20):
                self.restarts.remove(item)
                self.workers[name].start()
        for item in list(self.thaws):
            if now >= item[0]:
                self.thaws.remove(item)
                self.workers[item[1]].thaw()
        if self.sshd_back_at is not None and now >= self.sshd_back_at:
            self._sshd_back()

    def _sshd_back(self) -> None:
        if self.sshd is not None and self.sshd.process is None:
            self.sshd.start()
        self.sshd_back_at = None

    def _settle(self) -> None:
        """The run is done: every worker back, the same command once more, then check."""
        self._recover(float("inf"))
        self.wait_ready([n for n, p in self.workers.items() if p.alive()])
        time.sleep(self.timings.worker_heartbeat_s * 2)
        self.start_orchestrator()
        assert self.orchestrator is not None and self.orchestrator.popen is not None
        try:
            self.orchestrator.popen.wait(60)
        except subprocess.TimeoutExpired:
            self.orchestrator.kill()
        code = self._orchestrator_exited()
        time.sleep(self.timings.heartbeat_timeout_s)  # let the workers act on any cancel
        self.tally.finished = code == 0 and self._run_status() == "done"
        self.tally.checks = check(self.state, self.remote, self.fleet, self.alive_workers())

    def alive_workers(self) -> set[str]:
        return {n for n, p in self.workers.items() if p.alive()}

    def _chaos(self, kind: str) -> None:
        rng, t = self.rng, self.timings
        now = time.monotonic()
        if kind == "kill_orchestrator":
            assert self.orchestrator is not None
            if self.orchestrator.alive():
                self.orchestrator.kill()
                self._orchestrator_exited(killed=True)
                self.tally.kills_orchestrator += 1
                time.sleep(rng.uniform(0, 1.0))
                self.start_orchestrator()
        elif kind == "kill_worker":
            name = self._victim({n for _, n, _ in self.restarts})
            if name is not None:
                self.workers[name].kill()
                self.tally.kills_worker += 1
                if rng.random() < 0.5:  # back before the heartbeat timeout, or after it
                    self.restarts.append(
                        (now + rng.uniform(0.3, 2 * t.heartbeat_timeout_s), name, False)
                    )
                else:  # back only once its phase was written off and reassigned
                    self.restarts.append((now + rng.uniform(0.3, 2.0), name, True))
        elif kind == "stop_worker":
            name = self._victim({n for _, n, _ in self.restarts})
            if name is not None:
                self.workers[name].freeze()
                self.tally.stops_worker += 1
                self.thaws.append((now + rng.uniform(0.5, 2 * t.heartbeat_timeout_s), name))
        elif kind == "outage" and self.sshd is not None and self.sshd.process is not None:
            cut_sshd(self.sshd)
            self.tally.outages += 1
            self.sshd_back_at = now + rng.uniform(0.3, 2.5)

    def _at_last_phase(self) -> bool:
        """Every phase but one is accepted: the run is on its last phase (or merging)."""
        rows = _read(self.state, "SELECT COUNT(*) AS n, SUM(state = 'done') AS done FROM phases")
        return bool(rows) and rows[0]["n"] > 0 and (rows[0]["done"] or 0) >= rows[0]["n"] - 1

    def _written_off(self, worker: str) -> bool:
        """Every attempt this worker had in flight is settled in the state database."""
        rows = _read(self.state, "SELECT state FROM attempts WHERE worker = ?", (worker,))
        return all(r["state"] not in IN_FLIGHT for r in rows)

    def _run_status(self) -> str | None:
        rows = _read(self.state, "SELECT status FROM runs ORDER BY created_at DESC LIMIT 1")
        return rows[0]["status"] if rows else None

    def _orchestrator_exited(self, killed: bool = False) -> int:
        """Note how the orchestrator ended; returns its exit code."""
        assert self.orchestrator is not None and self.orchestrator.popen is not None
        code = self.orchestrator.popen.wait()
        if killed or code == 0:
            return code
        lines = self.orchestrator.log.read_text(errors="replace").strip().splitlines()
        self.tally.orchestrator_exits.append(f"exit {code}: {lines[-1][:300] if lines else ''}")
        return code

    def _orchestrator_ticking(self) -> bool:
        """The current orchestrator is past its start-up (it printed its first event)."""
        proc = self.orchestrator
        return proc is not None and proc.alive() and proc.log.stat().st_size > 0

    def _stuck(self) -> bool:
        """The last resumes all failed the same way: a user would give up."""
        limit = self.timings.same_failure_limit
        last = self.tally.orchestrator_exits[-limit:]
        return len(last) == limit and len(set(last)) == 1

    def _sample_failed_polls(self, stop: threading.Event) -> None:
        """Failed polls, from the state database's per-worker counter of consecutive
        unreachable polls, read every 20 ms (a tick is 200 ms): each rise is a failed
        call, a reset to 0 a success."""
        seen: dict[str, int] = {}
        while not stop.wait(0.02):
            for row in _read(self.state, "SELECT * FROM workers"):
                value = int(row.get("unreachable") or 0)
                before = seen.get(row["name"], 0)
                if value > before:
                    self.tally.failed_calls += value - before
                seen[row["name"]] = value

    def _send_failures(self) -> int:
        count = 0
        for log in self.dir.glob("dispatch-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if '"event": "send_failed"' in line:
                    count += 1
        return count

    def _stop_all(self) -> None:
        if self.orchestrator is not None:
            self.orchestrator.kill()
        for proc in self.workers.values():
            if self.tally.wedged:
                proc.thaw()
                proc.kill()
            else:
                proc.terminate()
        if self.sshd is not None and self.sshd.process is None:
            self.sshd.start()  # the next run needs it


# -- the checker ------------------------------------------------------------------------


def check(
    state: Path,
    remote: Path,
    fleet: LocalFleet,
    alive: set[str],
) -> dict[str, Any]:
    """Every invariant, from the state database, the inboxes and the remote."""
    runs = _read(state, "SELECT * FROM runs ORDER BY created_at")
    found: dict[str, Any] = {
        "runs_in_db": len(runs),
        "status": runs[-1]["status"] if runs else None,
        "reason": runs[-1]["reason"] if runs else None,
        "phase_done_twice": [],
        "phase_not_done": [],
        "accepted_missing_from_integration": [],
        "phase_branch_moved": [],
        "lost_responses": [],
        "unread": [],
        "phases_in_flight": [],
        "attempts_in_flight": [],
        "cancel_undelivered": [],
    }
    if not runs:
        return found
    run = runs[-1]
    run_id = run["id"]
    phases = {
        r["phase_id"]: r for r in _read(state, "SELECT * FROM phases WHERE run_id = ?", (run_id,))
    }
    attempts = _read(state, "SELECT * FROM attempts WHERE run_id = ?", (run_id,))
    by_key = {a["key"]: a for a in attempts}
    found["attempts"] = {
        f"{a['phase_id']}#{a['attempt']}": f"{a['worker']}:{a['state']}" for a in attempts
    }
    _check_phases(found, run, phases, attempts, remote)
    for attempt in attempts:
        if attempt["state"] in IN_FLIGHT:
            found["attempts_in_flight"].append(
                f"{attempt['phase_id']}#{attempt['attempt']}@{attempt['worker']}:{attempt['state']}"
            )
    _check_inboxes(found, by_key, fleet, alive)
    return found


def _check_phases(
    found: dict[str, Any],
    run: dict[str, Any],
    phases: dict[str, dict[str, Any]],
    attempts: list[dict[str, Any]],
    remote: Path,
) -> None:
    """One accepted attempt per phase, its commit at its branch head and in the merge."""
    for phase_id, phase in sorted(phases.items()):
        done = [a for a in attempts if a["phase_id"] == phase_id and a["state"] == "done"]
        if len(done) > 1:
            found["phase_done_twice"].append(
                {"phase": phase_id, "attempts": [f"{a['attempt']}@{a['worker']}" for a in done]}
            )
        if phase["state"] != "done" or not done:
            found["phase_not_done"].append(
                {"phase": phase_id, "state": phase["state"], "reason": phase["reason"]}
            )
        if phase["state"] in IN_FLIGHT:
            found["phases_in_flight"].append(
                {"phase": phase_id, "state": phase["state"], "worker": phase["worker"]}
            )
        commit = phase["commit_sha"]
        if phase["state"] == "done" and commit:
            head = _git(remote, "rev-parse", "--verify", "-q", f"refs/heads/{phase['branch']}")
            if head.stdout.strip() != commit:
                found["phase_branch_moved"].append(
                    {"phase": phase_id, "accepted": commit, "branch_head": head.stdout.strip()}
                )
            merge = run["merge_commit"]
            if merge and _git(remote, "merge-base", "--is-ancestor", commit, merge).returncode:
                found["accepted_missing_from_integration"].append(
                    {"phase": phase_id, "commit": commit, "merge": merge}
                )


def _check_inboxes(
    found: dict[str, Any],
    by_key: dict[str, dict[str, Any]],
    fleet: LocalFleet,
    alive: set[str],
) -> None:
    """Every finished message of the run's attempts is recorded; no written-off attempt
    still waits or runs, uncancelled, on a live worker."""
    for name, worker in fleet.workers.items():
        for message in _read(worker.queue_db, "SELECT * FROM messages WHERE kind = 'task'"):
            attempt = by_key.get(message["key"])
            if attempt is None:
                continue
            label = f"{attempt['phase_id']}#{attempt['attempt']}@{name}"
            if message["state"] in FINISHED:
                recorded = attempt.get("response") or attempt.get("late_response")
                if not recorded:
                    entry = {
                        "attempt": label,
                        "message": message["id"],
                        "state": message["state"],
                        "acked": message["acked_at"] is not None,
                    }
                    # acknowledged yet not stored: gone for good; not acknowledged: still
                    # there for a later poll to read (reported, not counted)
                    found["lost_responses" if message["acked_at"] else "unread"].append(entry)
            elif (
                attempt["state"] not in IN_FLIGHT
                and attempt["state"] != "done"
                and not message["cancel_requested"]
                and name in alive
            ):
                found["cancel_undelivered"].append(
                    {
                        "attempt": label,
                        "attempt_state": attempt["state"],
                        "message": message["state"],
                    }
                )
    return found


def summarise(tallies: list[Tally]) -> dict[str, int]:
    finished = [t for t in tallies if t.finished]

    def total(key: str, among: list[Tally]) -> int:
        return sum(len(t.checks.get(key, [])) for t in among)

    return {
        "runs": len(tallies),
        "finished": len(finished),
        "wedged": sum(t.wedged for t in tallies),
        "kills_orchestrator": sum(t.kills_orchestrator for t in tallies),
        "kills_worker": sum(t.kills_worker for t in tallies),
        "stops_worker": sum(t.stops_worker for t in tallies),
        "failed_calls": sum(t.failed_calls for t in tallies),
        "phase_done_twice": total("phase_done_twice", tallies),
        "accepted_missing_from_integration": total("accepted_missing_from_integration", tallies),
        "lost_responses": total("lost_responses", tallies),
        # only a finished run can be asked to have nothing in flight; a wedged one is counted
        # as wedged
        "left_in_flight": sum(
            len({p["phase"] for p in t.checks.get("phases_in_flight", [])})
            + len(t.checks.get("attempts_in_flight", []))
            + len(t.checks.get("cancel_undelivered", []))
            for t in finished
        ),
    }


def violations(tally: Tally) -> list[str]:
    """The names of the checks this run failed (empty when it is clean)."""
    keys = [
        "phase_done_twice",
        "accepted_missing_from_integration",
        "phase_branch_moved",
        "lost_responses",
    ]
    if tally.finished:
        keys += ["phases_in_flight", "attempts_in_flight", "cancel_undelivered"]
    bad = [k for k in keys if tally.checks.get(k)]
    if not tally.finished:
        bad.insert(0, "wedged" if tally.wedged else "not_finished")
    return bad


@contextlib.contextmanager
def local_sshd(root: Path, wanted: bool) -> Iterator[Sshd | None]:
    problem = sshd_problem() if wanted else "the local transport was asked for"
    if problem:
        print(f"no transport failures: {problem}; the local transport is used", flush=True)
        yield None
        return
    server = Sshd(root)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            cut_sshd(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("RUNS") or 5))
    parser.add_argument("--seed", type=int, default=None, help="seed of the first run")
    parser.add_argument("--dir", type=Path, default=None, help="where runs go (default: temp)")
    parser.add_argument("--transport", choices=("ssh", "local"), default="ssh")
    parser.add_argument("--deadline", type=float, default=Timings.deadline_s)
    parser.add_argument("--keep", action="store_true", help="keep clean runs' directories too")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    timings = Timings(deadline_s=args.deadline)
    base = Path(tempfile.mkdtemp(prefix="dispatch-chaos-", dir=args.dir))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # the example project uses no pytest plugin
    }
    print(f"dispatch chaos: {args.runs} runs, first seed {seed}, under {base}", flush=True)
    tallies: list[Tally] = []
    with local_sshd(base / "sshd", args.transport == "ssh") as sshd:
        for i in range(args.runs):
            run_seed = seed + i
            workdir = base / f"run-{i:03d}-seed-{run_seed}"
            workdir.mkdir()
            tally = ChaosRun(workdir, run_seed, timings, sshd, env).run()
            tallies.append(tally)
            bad = violations(tally)
            print(
                f"run {i} seed {run_seed}: {'FAIL ' + ','.join(bad) if bad else 'ok'} "
                f"in {tally.seconds}s; killed orchestrator {tally.kills_orchestrator}x, "
                f"worker {tally.kills_worker}x, stopped {tally.stops_worker}x, "
                f"{tally.outages} outages, {tally.failed_calls} failed calls",
                flush=True,
            )
            if bad:
                detail = {k: tally.checks.get(k) for k in bad if k in tally.checks}
                detail["status"] = tally.checks.get("status")
                detail["reason"] = tally.checks.get("reason")
                detail["attempts"] = tally.checks.get("attempts")
                detail["orchestrator_exits"] = tally.orchestrator_exits[-3:]
                print(f"  kept {workdir}: {json.dumps(detail)}", flush=True)
            elif not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    failing = [t for t in tallies if violations(t)]
    if not failing and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    summary = summarise(tallies)
    extra = {
        "seed": seed,
        "phase_branch_moved": sum(len(t.checks.get("phase_branch_moved", [])) for t in tallies),
        "cancel_undelivered": sum(len(t.checks.get("cancel_undelivered", [])) for t in tallies),
        "orchestrator_failures": sum(len(t.orchestrator_exits) for t in tallies),
        "failing_seeds": [t.seed for t in failing],
    }
    print(f"detail: {json.dumps(extra)}")
    print(json.dumps(summary))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
