"""A whole local pipeline for the orchestrator tests: a seeded bare remote, real
worker processes (`control worker run`) and `control dispatch` run as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control.demo import seed_remote
from control.localfleet import LocalFleet, WorkerShape
from tests.support import kill_tree

REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "fakes" / "bin"
SCRIPTED_AGENT = FAKES / "scripted-agent"


def write_spec(path: Path, phases: list[dict[str, Any]], **defaults: Any) -> Path:
    """A spec whose agent is the scripted agent (the `command` backend)."""
    document = {
        "version": 1,
        "name": "pipeline-test",
        "repo": {
            "url": "git@example.invalid:x.git",
            "base_branch": "main",
            "branch_prefix": "sa",
        },
        "defaults": {
            "agent": {"backend": "command", "command": [sys.executable, str(SCRIPTED_AGENT)]},
            "max_attempts": 2,
            "estimate_minutes": 1,
            "timeout_minutes": 5,
            **defaults,
        },
        "phases": phases,
    }
    path.write_text(json.dumps(document, indent=2))
    return path


class Pipeline:
    """One test's remote, fleet, agent plan and state database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = root / "origin.git"
        self.state = root / "state.db"
        # The scripted agent's plan and record: the one place beside its checkout the
        # sandbox lets it write (never the remote, the state or the workers' homes).
        self.agent_io = root / "agent-io"
        self.agent_io.mkdir()
        self.plan_file = self.agent_io / "agent-plan.json"
        self.agent_log = self.agent_io / "agent-runs.jsonl"
        self.fleet: LocalFleet | None = None
        self.dispatches: list[subprocess.Popen[str]] = []
        seed = root / "seed"
        seed.mkdir()
        (seed / "README.md").write_text("# pipeline test project\n")
        seed_remote(self.remote, seed)

    def plan(self, steps: dict[str, dict[str, Any]]) -> None:
        self.plan_file.write_text(json.dumps(steps))

    def start_fleet(self, *workers: WorkerShape, **options: Any) -> LocalFleet:
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{FAKES}{os.pathsep}"
            + os.environ.get("PATH", ""),
            "SCRIPTED_AGENT_PLAN": str(self.plan_file),
            "SCRIPTED_AGENT_LOG": str(self.agent_log),
            **options.pop("env", {}),
        }
        options.setdefault("heartbeat_seconds", 0.5)
        options.setdefault("lease_seconds", 5.0)
        settings = dict(options.pop("settings", {}) or {})
        # The fake claude reads the pins beside the package.
        read_only = [sys.prefix, sys.base_prefix, str(FAKES), str(REPO / "control" / "pins.json")]
        settings.setdefault("sandbox_read_only", read_only)
        settings.setdefault("sandbox_writable", [str(self.agent_io)])
        options["settings"] = settings
        self.fleet = LocalFleet(self.root / "fleet", workers, env=env, **options)
        self.fleet.create()
        self.fleet.start()
        self.fleet.wait_ready()
        return self.fleet

    def dispatch_command(self, spec: Path, *extra: str) -> list[str]:
        assert self.fleet is not None
        return [
            sys.executable,
            "-m",
            "control",
            "dispatch",
            str(spec),
            "--inventory",
            str(self.fleet.inventory),
            "--state",
            str(self.state),
            "--repo",
            str(self.remote),
            "--poll-interval",
            "0.2",
            "--heartbeat-timeout",
            "3",
            "--retry-backoff",
            "0.5",
            "--timeout",
            "120",
            "--json",
            *extra,
        ]

    def start_dispatch(self, spec: Path, *extra: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            self.dispatch_command(spec, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        self.dispatches.append(process)
        return process

    def dispatch(self, spec: Path, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
        result = subprocess.run(
            self.dispatch_command(spec, *extra),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        return result.returncode, parse_events(result.stdout), result.stderr

    def agent_runs(self) -> list[dict[str, Any]]:
        if not self.agent_log.exists():
            return []
        return [json.loads(line) for line in self.agent_log.read_text().splitlines()]

    def branch_file(self, branch: str, path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.remote), "show", f"{branch}:{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def close(self) -> None:
        for process in self.dispatches:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        if self.fleet is not None:
            for worker in self.fleet.workers.values():
                if worker.process is not None and worker.process.poll() is None:
                    kill_tree(worker.process.pid, signal.SIGCONT)
            self.fleet.stop(timeout_s=15)


def answering_fleet(pipeline: Pipeline, name: str = "w1") -> LocalFleet:
    """One local worker whose `claude` (the fake) answers free-form tasks."""
    scenario = pipeline.agent_io / "scenario.json"  # where the sandboxed agent can read it
    scenario.write_text(json.dumps({"scenario": "success", "files": {"notes.md": "ok\n"}}))
    fleet = pipeline.start_fleet(WorkerShape(name))
    # The fake claude plays this scenario; it wants a key, as the real one does.
    fleet.env.update(FAKE_CLAUDE_SCENARIO_FILE=str(scenario), ANTHROPIC_API_KEY="sk-ant-test")
    fleet.stop(name)
    fleet.start(name)
    fleet.wait_ready()
    return fleet


def parse_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    built = Pipeline(tmp_path)
    try:
        yield built
    finally:
        built.close()
