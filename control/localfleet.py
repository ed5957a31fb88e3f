"""A fleet of workers on this one machine: the demo's, the tests', a one-box setup's.

Each worker gets its own home (inbox, work and log directories, a worker.toml),
and the fleet an Ansible inventory naming them with the local transport. The
workers run as real `control worker run` processes, so they can be stopped with
SIGTERM or killed with SIGKILL like any worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from control.queue import Queue


@dataclass(frozen=True)
class WorkerShape:
    """The worker to create: its name, its capabilities and its number of slots."""

    name: str
    capabilities: tuple[str, ...] = ("linux",)
    slots: int = 1


@dataclass
class LocalWorker:
    """A created worker: its home and, once started, its `control worker run` process."""

    shape: WorkerShape
    home: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.shape.name

    @property
    def config(self) -> Path:
        return self.home / "worker.toml"

    @property
    def queue_db(self) -> Path:
        return self.home / "queue.db"

    @property
    def log(self) -> Path:
        return self.home / "worker.log"


def _toml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _toml_value(value: float | bool | str | Sequence[str]) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return json.dumps([str(v) for v in value])  # a JSON list of strings is TOML too


class LocalFleet:
    """Create, start and stop N workers under `root`."""

    def __init__(
        self,
        root: Path,
        workers: Sequence[WorkerShape],
        *,
        lease_seconds: float = 30.0,
        heartbeat_seconds: float = 2.0,
        env: Mapping[str, str] | None = None,
        pins: Mapping[str, Mapping[str, str]] | None = None,
        settings: Mapping[str, float | bool | str | Sequence[str]] | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.workers = {w.name: LocalWorker(w, self.root / "workers" / w.name) for w in workers}
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.env = dict(env or {})
        self.pins = {name: dict(p) for name, p in (pins or {}).items()}  # worker -> [pins]
        self.settings = dict(settings or {})  # more worker.toml settings, for every worker
        # The sandboxed agents and verify commands of a one-box fleet run the Python that
        # runs superagent (its venv and base installation, read-only), as `make demo` does.
        self.settings.setdefault("sandbox_read_only", [sys.prefix, sys.base_prefix])

    @property
    def inventory(self) -> Path:
        return self.root / "inventory"

    def create(self) -> None:
        """Homes, inboxes, worker.toml files and the inventory (idempotent)."""
        for worker in self.workers.values():
            home = worker.home
            for sub in ("work", "logs"):
                (home / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            Queue(worker.queue_db).close()
            worker.config.write_text(
                f'worker_id = "{worker.name}"\n'
                f'queue_db = "{worker.queue_db}"\n'
                f'work_dir = "{home / "work"}"\n'
                f'logs_dir = "{home / "logs"}"\n'
                f"slots = {worker.shape.slots}\n"
                f"lease_seconds = {self.lease_seconds}\n"
                f"heartbeat_seconds = {self.heartbeat_seconds}\n"
                f'git_author_name = "superagent worker {worker.name}"\n'
                f'git_author_email = "{worker.name}@superagent.local"\n'
                + "".join(f"{k} = {_toml_value(v)}\n" for k, v in self.settings.items())
                + "".join(
                    ["[pins]\n"]
                    + [f'{k} = "{v}"\n' for k, v in self.pins.get(worker.name, {}).items()]
                )
            )
        self.write_inventory()

    def write_inventory(self) -> None:
        host_vars = self.inventory / "host_vars"
        host_vars.mkdir(parents=True, exist_ok=True)
        hosts = "".join(f"        {name}:\n" for name in self.workers)
        (self.inventory / "hosts.yml").write_text(
            "---\n# Written by superagent's local fleet: workers on this machine.\n"
            "all:\n  children:\n    workers:\n      hosts:\n" + hosts
        )
        for worker in self.workers.values():
            (host_vars / f"{worker.name}.yml").write_text(
                "---\n"
                "superagent_transport: local\n"
                f"superagent_queue_db: {worker.queue_db}\n"
                f"superagent_capabilities: {_toml_list(worker.shape.capabilities)}\n"
                f"superagent_slots: {worker.shape.slots}\n"
            )

    def start(self, *names: str) -> None:
        """Start `control worker run` for the named workers (all by default)."""
        for name in names or tuple(self.workers):
            worker = self.workers[name]
            if worker.process is not None and worker.process.poll() is None:
                continue
            worker._log = worker.log.open("ab")
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "control", "worker", "run", "--config", str(worker.config)],
                stdout=worker._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until every running worker has beaten its heartbeat."""
        deadline = time.monotonic() + timeout_s
        for worker in self.workers.values():
            if worker.process is None:
                continue
            with Queue(worker.queue_db, create=False) as queue:
                while not any(b.worker_id == worker.name for b in queue.heartbeats()):
                    if worker.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"worker {worker.name} did not start; see {worker.log}")
                    time.sleep(0.05)

    def send(self, name: str, sig: signal.Signals) -> None:
        worker = self.workers[name]
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(sig)

    def stop(
        self, *names: str, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0
    ) -> None:
        """Stop the named workers (all by default) and wait for them to exit."""
        targets = [self.workers[n] for n in names or tuple(self.workers)]
        for worker in targets:
            self.send(worker.name, sig)
        for worker in targets:
            if worker.process is None:
                continue
            try:
                worker.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            if worker._log is not None:
                worker._log.close()
                worker._log = None
