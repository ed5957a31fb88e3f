"""`control dispatch` across the real fleet: over the ansible transport and over ssh,
through a host powered off mid-phase, with the injection corpus on every host.

The git remote is served to the hosts by `git daemon` on the bridge address (the
only address the hosts can reach besides the proxy); the orchestrator runs here.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control.demo import EXAMPLES, seed_remote
from control.inventory import load_inventory
from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from control.transport import Transports
from tests.fleet.conftest import Provisioning, report
from tests.fleet.harness import BRIDGE_ADDRESS, Fleet
from tests.injection import big_text, corpus

pytestmark = pytest.mark.fleet

GIT_PORT = 9418
CONTROL = WORKER_CONTROL
INBOX = WORKER_QUEUE_DB


class GitServer:
    """Bare repositories under one directory, served read-write over git://."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                f"--base-path={root}",
                f"--listen={BRIDGE_ADDRESS}",
                f"--port={GIT_PORT}",
                str(root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((BRIDGE_ADDRESS, GIT_PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("git daemon did not start") from None
                time.sleep(0.1)

    def new_remote(self, name: str, seed: Path) -> str:
        """A fresh bare repository seeded with `seed`; its git:// URL."""
        path = self.root / f"{name}.git"
        if path.exists():
            shutil.rmtree(path)
        seed_remote(path, seed)
        subprocess.run(["git", "-C", str(path), "config", "daemon.receivepack", "true"], check=True)
        return f"git://{BRIDGE_ADDRESS}:{GIT_PORT}/{name}.git"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def ready(provisioned: Provisioning, example_packages: None) -> Iterator[tuple[Fleet, GitServer]]:
    fleet = provisioned.fleet
    for host in ("host1", "host2", "host3"):
        if not fleet.running(host):
            fleet.start_host(host)
    # The example's capabilities: host3 is the one that sees Windows files.
    fleet.set_host_vars("host1", superagent_capabilities=["linux", "docker", "gpu"])
    fleet.set_host_vars("host3", superagent_capabilities=["linux", "windows-files"])
    root = Path(tempfile.mkdtemp(prefix="superagent-git-"))
    server = GitServer(root)
    try:
        yield fleet, server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)
        fleet.set_host_vars("host1", superagent_capabilities=None)
        fleet.set_host_vars("host3", superagent_capabilities=None)


def use_transport(fleet: Fleet, transport: str) -> None:
    for host in ("host1", "host2", "host3"):
        fleet.set_host_vars(host, superagent_transport=transport)


def dispatch(
    fleet: Fleet,
    spec: Path,
    url: str,
    state: Path,
    *extra: str,
    background: bool = False,
    inventory: Path | None = None,
) -> Any:
    """`control dispatch` of `spec` on the fleet (`inventory`: another than the fleet's)."""
    argv = [
        sys.executable,
        "-m",
        "control",
        "dispatch",
        str(spec),
        "--inventory",
        str(inventory or fleet.inventory_dir),
        "--state",
        str(state),
        "--repo",
        url,
        "--poll-interval",
        "1",
        "--heartbeat-timeout",
        "20",
        "--retry-backoff",
        "1",
        "--timeout",
        "900",
        "--json",
        *extra,
    ]
    if background:
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=fleet.ansible_env(),
        )
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=1200, env=fleet.ansible_env()
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("transport", ["ansible", "ssh"])
def test_the_webapp_example_runs_to_merged_branches(
    ready: tuple[Fleet, GitServer], tmp_path: Path, transport: str
) -> None:
    fleet, server = ready
    use_transport(fleet, transport)
    url = server.new_remote(f"webapp-{transport}", EXAMPLES / "seed" / "webapp")
    started = time.monotonic()
    done = dispatch(
        fleet,
        EXAMPLES / "webapp.json",
        url,
        tmp_path / "state.db",
        "--agent",
        "replay",
        "--replay-dir",
        str(EXAMPLES / "replay" / "webapp"),
    )
    report(f"webapp_dispatch_{transport}_s", round(time.monotonic() - started, 1))
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    summary = events(done.stdout)[-1]
    assert summary["status"] == "done"
    (merged,) = [e for e in events(done.stdout) if e.get("event") == "merged"]
    assert merged["worker"] in ("host1", "host2", "host3")  # the final check ran on a host
    assert summary["phases"]["windows-paths"]["worker"] == "host3"
    assert {p["worker"] for p in summary["phases"].values()} <= {"host1", "host2", "host3"}
    remote = server.root / f"webapp-{transport}.git"
    files = subprocess.run(
        ["git", "-C", str(remote), "ls-tree", "-r", "--name-only", summary["merge_branch"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for expected in ("backend/app/auth.py", "frontend/src/App.tsx", "CHANGELOG.md"):
        assert expected in files


def test_a_host_powered_off_mid_phase_has_its_phase_finished_on_another(
    ready: tuple[Fleet, GitServer], tmp_path: Path
) -> None:
    fleet, server = ready
    use_transport(fleet, "ssh")
    url = server.new_remote("power-off", EXAMPLES / "seed" / "tiny")
    spec = tmp_path / "slow.json"
    spec.write_text(
        json.dumps(
            {
                "version": 1,
                "name": "power-off",
                "repo": {
                    "url": "git@example.invalid:x.git",
                    "base_branch": "main",
                    "branch_prefix": "sa",
                },
                "defaults": {"max_attempts": 3, "estimate_minutes": 1, "timeout_minutes": 10},
                "phases": [
                    {
                        "id": "slow",
                        "title": "Slow",
                        "task": "Take a while, then write slow.txt with the word done in it.",
                        "deliverables": ["slow.txt"],
                        "verify": ["grep -qx done slow.txt"],
                        "agent": {
                            "backend": "command",
                            "command": [
                                "bash",
                                "-c",
                                "sleep 20; echo done > slow.txt; echo finished",
                            ],
                        },
                    }
                ],
            }
        )
    )
    process = dispatch(fleet, spec, url, tmp_path / "state.db", background=True)
    assert process.stdout is not None
    victim = None
    for line in process.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "dispatched":
            victim = event["worker"]
            break
    assert victim is not None, process.stderr.read() if process.stderr else ""
    time.sleep(8)  # the agent is running on the victim
    started = time.monotonic()
    fleet.stop_host(victim)
    try:
        out, err = process.communicate(timeout=600)
    finally:
        fleet.start_host(victim)
    report("power_off_recovery_s", round(time.monotonic() - started, 1))
    assert process.returncode == 0, err[-3000:]
    seen = events(out)
    done = [e for e in seen if e.get("event") == "phase_done"]
    assert len(done) == 1 and done[0]["worker"] != victim
    assert any(e.get("event") == "worker_down" and e["worker"] == victim for e in seen)


@pytest.mark.parametrize("transport", ["ansible", "ssh"])
def test_the_injection_corpus_reaches_every_host_verbatim_and_runs_nowhere(
    ready: tuple[Fleet, GitServer], transport: str
) -> None:
    fleet, _ = ready
    use_transport(fleet, transport)
    canary = Path(f"/tmp/superagent-canary-{transport}")
    texts = [*corpus(canary), big_text(200_000)]
    workers = load_inventory(fleet.inventory_dir)
    transports = Transports(inventory=fleet.inventory_dir)
    try:
        for worker in workers:
            if transport == "ansible":  # ~2 s a call: a sample per host, all of it on one
                chosen = texts if worker.name == "host1" else texts[:3]
            else:
                chosen = texts
            for number, text in enumerate(chosen):
                payload = {"type": "probe", "text": text, "nested": {"again": [text]}}
                key = f"probe/{transport}/{number}"
                sent = transports.enqueue(worker, payload, key=key, max_attempts=1)
                shown = fleet.exec(
                    worker.name,
                    [
                        "sudo",
                        "-u",
                        "superagent",
                        CONTROL,
                        "queue",
                        "show",
                        str(sent.id),
                        "--db",
                        INBOX,
                        "--json",
                    ],
                )
                assert json.loads(shown.stdout)["payload"] == payload, (worker.name, number)
    finally:
        transports.close()
    for worker in workers:
        assert fleet.exec(worker.name, ["test", "-e", str(canary)], check=False).returncode == 1
    assert not canary.exists()
