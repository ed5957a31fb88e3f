"""Runs on the test fleet, for the tests and bench-fleet: a background `control dispatch`
watched event by event, specs of phases that sleep, `control` as the operator types it, and
the inventory change that moves a host to the Node 22 line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from tests.fleet.harness import REPO, Fleet, PlaybookRun, parse_recap
from tests.fleet.harness.line import line_vars, pins_line

NO_STATE = Path("/nonexistent/state.db")  # for the commands that only mirror into one


class Watch:
    """The events a background `control dispatch --json` prints, read as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                with self._changed:
                    self.seen.append(json.loads(line))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((e for e in self.seen if wanted(e)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"not seen in {timeout:g}s; events: {self.seen[-20:]}")
                self._changed.wait(min(left, 1.0))

    def finish(self, timeout: float = 900) -> list[dict[str, Any]]:
        """Wait for the run to end; every event it printed (it must have exited 0)."""
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._reader.join(10)
        err = self.process.stderr.read() if self.process.stderr else ""
        assert self.process.returncode == 0, "\n".join(
            [err[-2000:], *(json.dumps(e)[:400] for e in self.seen[-30:])]
        )
        return self.seen

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def control(
    fleet: Fleet,
    *args: str,
    state: Path = NO_STATE,
    timeout: float = 120,
    inventory: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`control ARGS --inventory <the fleet's, or inventory>` as the operator types it, on
    the test's state database (never this machine's default one)."""
    where = str(inventory or fleet.inventory_dir)
    return subprocess.run(
        [sys.executable, "-m", "control", *args, "--inventory", where],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={**fleet.ansible_env(), "SUPERAGENT_STATE_DB": str(state)},
    )  # fmt: skip


def make_provision(fleet: Fleet, *variables: str, label: str) -> PlaybookRun:
    """`make provision VAR=...` on the fleet as the operator types it (the vault password
    as a file argument, not in the environment); the log goes to the fleet's logs."""
    env = fleet.ansible_env()
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE")
    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "provision", f"INVENTORY={fleet.inventory_dir}",
         f"VAULT_PASSWORD_FILE={fleet.vault_password_file}", *variables],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=1200, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    (fleet.logs / f"{label}.log").write_text(output)
    return PlaybookRun(done.returncode, parse_recap(output), output, time.monotonic() - started)


def sleepy_spec(path: Path, phases: dict[str, tuple[int, list[str]]]) -> Path:
    """A spec of command phases: each sleeps its seconds, then writes its file."""
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "name": path.stem,
                "repo": {"url": "git@example.invalid:x.git", "base_branch": "main",
                         "branch_prefix": "sa"},
                "defaults": {"max_attempts": 2, "estimate_minutes": 1, "timeout_minutes": 10},
                "phases": [
                    {
                        "id": name, "title": name, "depends_on": after,
                        "task": f"Write {name}.txt saying done.",
                        "deliverables": [f"{name}.txt"],
                        "verify": [f"grep -qx done {name}.txt"],
                        "agent": {"backend": "command", "command": ["bash", "-c",
                                  f"sleep {seconds}; echo done > {name}.txt; echo finished"]},
                    }
                    for name, (seconds, after) in phases.items()
                ],
            }
        )
    )  # fmt: skip
    return path


def wait_claimed(fleet: Fleet, host: str, timeout: float = 120) -> None:
    """Until the host's worker has claimed what was sent to it (the agent runs)."""
    deadline = time.monotonic() + timeout
    while True:
        done = fleet.exec(
            host,
            ["sudo", "-u", "superagent", WORKER_CONTROL, "queue", "stats", "--db",
             WORKER_QUEUE_DB, "--json"],
        )  # fmt: skip
        if json.loads(done.stdout)["by_state"].get("claimed", 0) > 0:
            return
        assert time.monotonic() < deadline, f"{host} claimed nothing in {timeout:g}s"
        time.sleep(0.5)


def dispatched(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "dispatched" and e.get("phase") == phase


def done_once(seen: list[dict[str, Any]]) -> dict[str, str]:
    """Each phase's worker; fails unless every phase was done exactly once."""
    done = [e for e in seen if e.get("event") == "phase_done"]
    phases = [e["phase"] for e in done]
    assert len(phases) == len(set(phases)), phases
    return {e["phase"]: e["worker"] for e in done}


def upgrade(fleet: Fleet, state: Path) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    done = control(
        fleet, "upgrade", "--playbook", str(REPO / "playbooks/site.yml"),
        "--health-timeout", "120", "--json", state=state, timeout=1800,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), time.monotonic() - started


def node22_vars() -> dict[str, Any]:
    """The inventory change to the Node 22 line of pins.json (None: a variable removed)."""
    return line_vars(pins_line("node22"))
