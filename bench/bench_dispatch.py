"""Dispatch: enqueue-to-claim latency per transport, and the orchestrator's CPU per tick.

Latency is the time from the start of `transport.enqueue()` to the moment a
worker-side Queue on the same inbox has claimed the message (woken by inotify,
as the worker daemon is). local always; ssh against a local sshd started here
(root and openssh-server needed); ansible against `ansible_connection: local`
hosts. The tick cost is the CPU time of one `Transports.poll` of N local inboxes
(heartbeats and a few responses each) plus reading the answers, per worker.

The ansible hosts run superagent as a provisioned worker does: a venv of their own,
made by the system's Python (the worker role's `worker_python`, /usr/bin/python3) when
it is here, with superagent installed from its wheel (`make wheels`, dist/wheels); not
this checkout's development install, whose import hook every Python start would pay for.

    .venv/bin/python bench/bench_dispatch.py [--samples 200] [--ssh-samples 50]
        [--ansible-samples 3] [--fanout 5] [--ansible-hosts 50] [--workers 100,1000]
        [--dir PATH] [--worker-wheels dist/wheels] [--worker-python /usr/bin/python3]
        [--skip-ssh] [--skip-ansible]

Figures, never asserts. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.sshd: the same local sshd the tests use

from control.inventory import Worker  # noqa: E402
from control.queue import Queue  # noqa: E402
from control.transport import Transports  # noqa: E402
from control.transport.base import Transport  # noqa: E402
from control.worker.wake import InboxWatcher, await_commit  # noqa: E402


class Claimer(threading.Thread):
    """The worker side: waits on the inbox (inotify), claims, notes when each key landed."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.claimed: dict[str, float] = {}
        self.arrived = threading.Condition()
        self._stop_event = threading.Event()
        self._watcher = InboxWatcher(db)

    def run(self) -> None:
        # As the worker daemon does: inotify fires on the writer's first WAL write, a
        # moment before the commit is visible, so it looks for the commit to land.
        with Queue(self.db, create=False) as queue:
            while not self._stop_event.is_set():
                if queue.has_work():
                    claimed = queue.claim("bench", 600)
                    if claimed is not None:
                        now = time.perf_counter()
                        with self.arrived:
                            self.claimed[str(claimed.key)] = now
                            self.arrived.notify_all()
                        continue
                seen = queue.data_version()
                if self._watcher.wait(0.2) == "changed":
                    await_commit(queue.data_version, seen)
        self._watcher.close()

    def wait_for(self, key: str, timeout_s: float) -> float:
        with self.arrived:
            if not self.arrived.wait_for(lambda: key in self.claimed, timeout_s):
                raise TimeoutError(f"{key} was not claimed within {timeout_s}s")
            return self.claimed[key]

    def stop(self) -> None:
        self._stop_event.set()
        self._watcher.wake()
        self.join(10)


def _inbox(path: Path, sync: Any = "full") -> Path:
    Queue(path, sync=sync).close()
    return path


def children_cpu_s() -> float:
    """User and system seconds of this process's finished children and theirs."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latency(transport: Transport, worker: Worker, db: Path, samples: int, tag: str) -> list[float]:
    """Milliseconds from the start of enqueue() to the worker's claim, `samples` times."""
    claimer = Claimer(db)
    claimer.start()
    found = []
    try:
        transport.enqueue(worker, {"warm": tag}, key=f"{tag}/warm")  # connect, import, open
        claimer.wait_for(f"{tag}/warm", 120)
        for i in range(samples):
            key = f"{tag}/{i}"
            start = time.perf_counter()
            transport.enqueue(worker, {"task": i, "text": "x" * 200}, key=key)
            found.append((claimer.wait_for(key, 120) - start) * 1000)
    finally:
        claimer.stop()
    return found


def summary(name: str, values: list[float]) -> dict[str, float]:
    median, p99 = statistics.median(values), percentile(values, 99)
    print(
        f"{name:8} enqueue→claim  median {median:8.2f} ms   p99 {p99:8.2f} ms   (n={len(values)})"
    )
    return {f"{name}_median_ms": round(median, 3), f"{name}_p99_ms": round(p99, 3)}


def local_fleet(root: Path, count: int) -> list[Worker]:
    """`count` local inboxes, each with two slots' heartbeats and three unacked responses."""
    workers = []
    for i in range(count):
        db = root / f"w{i}.db"
        with Queue(db, sync="normal") as q:
            for slot in (1, 2):
                q.beat(f"w{i}-{slot}", "busy", current=[f"run/p{slot}/1"], versions={"node": "20"})
            for n in range(3):
                q.enqueue({"phase": f"p{n}", "task": "t" * 100}, key=f"run/p{n}/1")
                claimed = q.claim(f"w{i}-1", 600)
                assert claimed is not None
                q.complete(claimed.id, claimed.fence, {"branch": f"p{n}", "commit": "c" * 40})
        workers.append(Worker(f"w{i}", transport="local", vars={"superagent_queue_db": str(db)}))
    return workers


def ingest(results: dict[str, Any]) -> int:
    """What the orchestrator does with a poll: the responses to persist, the last beats."""
    seen = 0
    beats: dict[str, float] = {}
    for name, result in results.items():
        if not result.reachable:
            continue
        for response in result.responses:
            seen += bool(response["id"]) and response["state"] in ("done", "failed", "dead")
        for beat in result.heartbeats:
            beats[name] = max(beats.get(name, 0.0), float(beat["beat_at"]))
    return seen


def tick_cpu(workers: list[Worker], ticks: int = 3) -> tuple[float, float]:
    """CPU ms per worker of the first (cold: opens every inbox) and of a warm tick (median)."""
    transports = Transports()
    try:
        costs = []
        for _ in range(ticks + 1):
            start = time.process_time()
            answered = ingest(transports.poll(workers))
            costs.append((time.process_time() - start) * 1000 / len(workers))
            assert answered == 3 * len(workers), answered
        return costs[0], statistics.median(costs[1:])
    finally:
        transports.close()


@contextmanager
def local_sshd(root: Path) -> Iterator[Any]:
    from tests.sshd import Sshd, sshd_problem  # noqa: PLC0415

    if problem := sshd_problem():
        print(f"ssh      skipped: {problem}")
        yield None
        return
    server = Sshd(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def measure_ssh(root: Path, samples: int, fanout: int) -> dict[str, Any]:
    from control.transport.ssh import SshTransport  # noqa: PLC0415

    figures: dict[str, Any] = {}
    with local_sshd(root / "sshd") as sshd:
        if sshd is None:
            return figures
        transport = SshTransport()
        try:
            db = _inbox(root / "ssh.db")
            figures.update(
                summary("ssh", latency(transport, sshd.worker("s", db), db, samples, "s"))
            )
            fleet = [sshd.worker(f"s{i}", _inbox(root / f"s{i}.db")) for i in range(fanout)]
            transport.poll(fleet)  # connect each
            start, cpu = time.perf_counter(), time.process_time()
            polled = transport.poll(fleet)
            wall = (time.perf_counter() - start) * 1000
            cpu_per = (time.process_time() - cpu) * 1000 / fanout
            assert all(r.reachable for r in polled.values()), polled
            print(f"ssh      poll of {fanout} workers: {wall:.1f} ms, {cpu_per:.2f} ms CPU/worker")
            figures[f"ssh_poll_ms_{fanout}"] = round(wall, 3)
            figures[f"ssh_tick_cpu_ms_per_worker_{fanout}"] = round(cpu_per, 3)
            figures["ssh_connects"] = sum(transport.connects(w) for w in fleet)
        finally:
            transport.close()
    return figures


WORKER_PYTHON = "/usr/bin/python3"  # the worker role's default worker_python


def worker_venv(root: Path, wheels: Path, python: str) -> Path:
    """A worker's venv as the worker role makes it (`python -m venv --without-pip`, then
    superagent and its dependencies from the wheels, no index): its bin directory."""
    if not any(wheels.glob("superagent-*.whl")):
        raise SystemExit(f"{wheels}: no superagent wheel here (run `make wheels`)")
    home = root / "worker-venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(home)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install",
         "--quiet", "--disable-pip-version-check", "--no-index", "--find-links", str(wheels),
         "superagent"],
        check=True,
    )  # fmt: skip
    return home / "bin"


def _plain_ansible(inventory: Path, worker: Worker, request: dict[str, Any], env: dict[str, str],
                   module: str = "ansible.builtin.command") -> float:  # fmt: skip
    """Milliseconds of one plain `ansible HOST -m command` running the same rpc (or of
    `-m ping`), with the environment superagent's runner gives Ansible."""
    from control import rpc  # noqa: PLC0415

    args = json.dumps(
        {
            "argv": [worker.vars["superagent_control"], "queue", "rpc", "--db",
                     worker.vars["superagent_queue_db"], "--base64"],
            "stdin": rpc.encode(request),
        }
    )  # fmt: skip
    ansible = str(Path(sys.executable).parent / "ansible")
    command = [ansible, worker.name, "-i", str(inventory), "-m", module]
    if module != "ansible.builtin.ping":
        command += ["-a", args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"plain ansible failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return elapsed


def measure_ansible(
    root: Path, samples: int, fanout: int, hosts: int, wheels: Path, python: str
) -> dict[str, Any]:
    """Enqueue latency, then side by side (interleaved, medians): a one-host poll through
    superagent's fan-out and a plain `ansible` ad-hoc call running the same rpc (and
    `-m ping`) against the same host; then polls of `fanout` and of `hosts` hosts (medians
    of `samples` each). Every host is
    `ansible_connection: local` with an inbox of its own and the worker venv's Python."""
    import ansible_runner  # noqa: PLC0415

    from control.transport.ansible import AnsibleTransport  # noqa: PLC0415
    from control.transport.runner import AdHocRunner  # noqa: PLC0415

    bindir = worker_venv(root, wheels, python)
    print(f"ansible  hosts: ansible_connection local, a worker venv of {python}")

    def local_host(name: str, db: Path) -> Worker:
        values = {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(bindir / "python"),
            "superagent_control": str(bindir / "control"),
            "superagent_queue_db": str(db),
        }
        return Worker(name, transport="ansible", vars=values)

    cp = Path(tempfile.mkdtemp(prefix="sa-cp-"))  # short: ssh socket paths are limited
    runner = AdHocRunner(control_path_dir=cp)
    transport = AnsibleTransport(runner=runner)
    invocations = []
    real: Callable[..., Any] = ansible_runner.run

    def counting(**kwargs: Any) -> Any:
        invocations.append(kwargs["host_pattern"])
        return real(**kwargs)

    def one_poll(fleet: list[Worker]) -> tuple[float, int, float]:
        """Wall ms, ansible-runner calls, and CPU ms of every process the poll ran (Ansible,
        its forks, each host's module and rpc: this machine's two cores are the fleet's)."""
        before = len(invocations)
        cpu = children_cpu_s()
        start = time.perf_counter()
        polled = transport.poll(fleet)
        wall = (time.perf_counter() - start) * 1000
        assert all(r.reachable for r in polled.values()), polled
        return wall, len(invocations) - before, (children_cpu_s() - cpu) * 1000

    ansible_runner.run = counting
    try:
        db = _inbox(root / "ansible.db")
        figures = summary("ansible", latency(transport, local_host("a", db), db, samples, "a"))
        fleet = [local_host(f"a{i}", _inbox(root / f"a{i}.db")) for i in range(max(fanout, hosts))]
        inventory = root / "ansible-hosts.json"
        inventory.write_text(json.dumps({"all": {"hosts": {w.name: w.vars for w in fleet}}}))
        env = runner.envvars()
        ours, plain, ping = [], [], []
        for _ in range(max(1, samples)):
            ours.append(one_poll(fleet[:1])[0])
            plain.append(_plain_ansible(inventory, fleet[0], {"op": "poll", "limit": 200}, env))
            ping.append(_plain_ansible(inventory, fleet[0], {}, env, "ansible.builtin.ping"))
        print(
            f"ansible  one host: superagent's fan-out {statistics.median(ours):.0f} ms, plain "
            f"ansible (same rpc) {statistics.median(plain):.0f} ms, ping "
            f"{statistics.median(ping):.0f} ms (medians of {len(ours)}, interleaved)"
        )
        figures["ansible_fanout_1_ms"] = round(statistics.median(ours), 1)
        figures["plain_ansible_1_ms"] = round(statistics.median(plain), 1)
        figures["plain_ansible_ping_1_ms"] = round(statistics.median(ping), 1)
        for size in sorted({1, fanout, hosts}):
            polls = [one_poll(fleet[:size]) for _ in range(max(1, samples))]
            wall, cpu = (statistics.median(p[i] for p in polls) for i in (0, 2))
            calls = max(p[1] for p in polls)
            print(f"ansible  poll of {size} workers: {wall / 1000:.2f} s in {calls} ansible-runner "
                  f"call(s), {cpu / 1000:.2f} s of CPU (medians of {len(polls)})")  # fmt: skip
            if size != 1:
                figures[f"ansible_fanout_{size}_ms"] = round(wall, 1)
            figures[f"ansible_fanout_{size}_cpu_ms"] = round(cpu, 1)
            figures["ansible_calls_per_poll"] = calls
    finally:
        ansible_runner.run = real
        shutil.rmtree(cp, ignore_errors=True)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="local latency samples")
    parser.add_argument("--ssh-samples", type=int, default=50)
    parser.add_argument("--ansible-samples", type=int, default=3)
    parser.add_argument("--fanout", type=int, default=5, help="workers in the remote polls")
    parser.add_argument("--ansible-hosts", type=int, default=50, help="hosts in the big fan-out")
    parser.add_argument("--workers", default="100,1000", help="fleet sizes for the tick cost")
    parser.add_argument("--dir", type=Path, default=None, help="where the inboxes go")
    parser.add_argument("--worker-wheels", type=Path, default=REPO / "dist" / "wheels",
                        help="superagent's wheels for the ansible hosts' venv")  # fmt: skip
    parser.add_argument("--worker-python", default=None,
                        help=f"the Python the hosts' venv is made with ({WORKER_PYTHON} "
                             "when it is here, else this one)")  # fmt: skip
    parser.add_argument("--skip-ssh", action="store_true")
    parser.add_argument("--skip-ansible", action="store_true")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-dispatch-", dir=args.dir))
    figures: dict[str, Any] = {}
    try:
        db = _inbox(root / "local.db")
        worker = Worker("l", transport="local", vars={"superagent_queue_db": str(db)})
        transports = Transports()
        try:
            figures.update(
                summary("local", latency(transports.of(worker), worker, db, args.samples, "l"))
            )
        finally:
            transports.close()

        for size in (int(s) for s in args.workers.split(",") if s.strip()):
            fleet_dir = root / f"fleet-{size}"
            fleet_dir.mkdir()
            cold, warm = tick_cpu(local_fleet(fleet_dir, size))
            print(
                f"tick     {size:5} local workers: {warm:.3f} ms CPU/worker "
                f"(first tick, opening every inbox: {cold:.3f})"
            )
            figures[f"tick_cpu_ms_per_worker_{size}"] = round(warm, 4)
            figures[f"tick_cpu_ms_per_worker_{size}_cold"] = round(cold, 4)
            shutil.rmtree(fleet_dir)

        if not args.skip_ssh:
            figures.update(measure_ssh(root, args.ssh_samples, args.fanout))
        if not args.skip_ansible:
            figures.update(
                measure_ansible(
                    root,
                    args.ansible_samples,
                    args.fanout,
                    args.ansible_hosts,
                    args.worker_wheels,
                    args.worker_python
                    or (WORKER_PYTHON if Path(WORKER_PYTHON).exists() else sys.executable),
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
