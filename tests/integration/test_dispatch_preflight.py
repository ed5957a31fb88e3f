"""Before `control dispatch` sends a Claude Code phase, every live worker that may take
one has `claude` and a credential, or the dispatch stops at once with one line naming the
host and what to do (issue 11: the Claude Code path failed late and misleadingly).

Real worker processes report what they have in their heartbeat; `control dispatch` runs
as a process."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from control.driver import check_claude_code
from control.inventory import load_inventory
from control.localfleet import WorkerShape
from control.spec import load_spec
from control.transport import Transports
from tests.fakes.agents import credential_file
from tests.integration.conftest import Pipeline, write_spec

pytestmark = pytest.mark.slow

NO_KEYS = {"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": "", "ANTHROPIC_AUTH_TOKEN": ""}
PHASES = [{"id": "api", "title": "API", "task": "Write api.txt.", "deliverables": ["api.txt"]}]


def claude_spec(path: Path) -> Path:
    return write_spec(path, PHASES, agent={"backend": "claude-code"})


def refused(pipeline: Pipeline, spec: Path, *extra: str) -> str:
    code, events, err = pipeline.dispatch(spec, *extra)
    assert code == 5, (code, events, err)  # ExitCode.UNAVAILABLE
    assert events == [] and err.count("\n") == 1, err
    runs = []
    if pipeline.state.exists():
        with sqlite3.connect(pipeline.state) as conn:
            runs = conn.execute("SELECT id FROM runs").fetchall()
    assert runs == []  # nothing started, nothing half-written
    return err


def test_a_worker_without_a_credential_stops_the_dispatch_naming_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"), env=NO_KEYS)
    err = refused(pipeline, claude_spec(tmp_path / "spec.json"))
    assert err.startswith("error: Claude Code cannot run on w1: Claude Code has no credential")
    assert "; w2: Claude Code has no credential" in err
    assert "claude_code_api_key" in err and "ANTHROPIC_API_KEY" in err  # what to do
    # With Claude Code accounts in the inventory the credentials are the accounts' (sent
    # only where one is usable): then only `claude` itself is asked for.
    assert pipeline.fleet is not None
    transports = Transports(inventory=pipeline.fleet.inventory)
    try:
        check_claude_code(
            load_spec(claude_spec(tmp_path / "spec.json")),
            load_inventory(pipeline.fleet.inventory),
            transports,
            accounts=True,
        )
    finally:
        transports.close()
    # Another agent needs no credential: the same fleet runs a spec of it.
    pipeline.plan({"api": {"files": {"api.txt": "ready\n"}}})
    code, events, err = pipeline.dispatch(write_spec(tmp_path / "command.json", PHASES))
    assert code == 0, err
    assert events[-1]["status"] == "done"


def test_a_worker_without_claude_stops_the_dispatch_naming_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    creds = credential_file(tmp_path)
    settings = {"credential_file": str(creds), "claude": str(tmp_path / "no" / "claude")}
    pipeline.start_fleet(WorkerShape("w1"), settings=settings, env=NO_KEYS)
    err = refused(pipeline, claude_spec(tmp_path / "spec.json"))
    assert "Claude Code cannot run on w1: `claude` is not installed" in err
    assert "make provision" in err


def test_workers_with_claude_and_a_credential_pass_and_only_capable_ones_are_asked(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    creds = credential_file(tmp_path)
    fleet = pipeline.start_fleet(
        WorkerShape("ok"), settings={"credential_file": str(creds)}, env=NO_KEYS
    )
    spec = load_spec(claude_spec(tmp_path / "spec.json"))
    workers = load_inventory(fleet.inventory)
    transports = Transports(inventory=fleet.inventory)
    try:
        check_claude_code(spec, workers, transports)  # no error: the worker can run it
        # A phase that needs a capability the worker lacks does not ask it at all.
        gpu = replace(spec, phases=tuple(replace(p, requires=("gpu",)) for p in spec.phases))
        broken = [replace(w, name="nobody-home") for w in workers]  # would not answer
        check_claude_code(gpu, broken, transports)
    finally:
        transports.close()
