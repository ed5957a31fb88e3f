"""Helpers for the agent backend tests: a PATH with the fake `claude`, credentials, requests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from control.messages import AgentOptions, PhaseTask, PrerequisiteRef
from control.worker.agents import AgentRequest

FAKE_BIN = Path(__file__).resolve().parent / "bin"
FAKE_CLAUDE = FAKE_BIN / "claude"
API_KEY = "sk-ant-api03-TEST-SECRET-0123456789abcdef"


def fake_path() -> str:
    """PATH with the fake `claude` first."""
    return f"{FAKE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def credential_file(directory: Path, text: str | None = None, mode: int = 0o600) -> Path:
    path = directory / "credentials.env"
    path.write_text(text if text is not None else f"ANTHROPIC_API_KEY={API_KEY}\n")
    path.chmod(mode)
    return path


def phase_task(phase_id: str = "p", task: str = "t", **fields: Any) -> PhaseTask:
    """A phase task for a backend's request: the fields a test names, the rest plain."""
    return PhaseTask(**{
        "run_id": "r1", "phase_id": phase_id, "attempt": 1, "title": phase_id, "task": task,
        "branch": f"sa/{phase_id}", "repo_url": "file:///repo", "base_branch": "main",
        "deliverables": (), **fields,
    })  # fmt: skip


def claude_request(
    tmp_path: Path,
    scenario: str | dict[str, Any] = "success",
    *,
    phase_id: str = "build-api",
    options: dict[str, Any] | None = None,
    wall_timeout_s: float = 30.0,
    silence_timeout_s: float | None = 20.0,
    with_credentials: bool = True,
    env: dict[str, str] | None = None,
    phase: dict[str, Any] | None = None,
    **fields: Any,
) -> AgentRequest:
    """A request for the claude-code backend that runs the fake in a fresh checkout dir."""
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    spec = {"scenario": scenario} if isinstance(scenario, str) else scenario
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(spec))
    child_env = {
        "PATH": fake_path(),
        "FAKE_CLAUDE_SCENARIO_FILE": str(scenario_file),
        "FAKE_CLAUDE_DUMP": str(tmp_path / "dump.json"),
        **(env or {}),
    }
    task = phase_task(
        phase_id,
        "Add a /health endpoint that answers 200.",
        deliverables=("app/health.py",),
        verify=("pytest -q tests/test_health.py",),
        prerequisites=(
            PrerequisiteRef("scaffold", "sa/scaffold", "0123456789abcdef0123", "Flask app"),
        ),
        **(phase or {}),
    )
    return AgentRequest(
        phase=task,
        checkout=checkout,
        log_path=tmp_path / "logs" / f"1-{phase_id}-a1.log",
        options=AgentOptions.from_dict(options or {}),
        wall_timeout_s=wall_timeout_s,
        silence_timeout_s=silence_timeout_s,
        credential_file=credential_file(tmp_path) if with_credentials else None,
        env=child_env,
        kill_grace_s=1.0,
        **fields,
    )


def dumped(tmp_path: Path) -> dict[str, Any]:
    """What the fake `claude` received (argv, prompt, which credentials were set)."""
    data: dict[str, Any] = json.loads((tmp_path / "dump.json").read_text())
    return data
