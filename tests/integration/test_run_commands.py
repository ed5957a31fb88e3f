"""The commands around a run: status, retry, cancel, merge, and Ctrl-C then resume."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from control.cli import app
from control.cli_view import live_view
from control.localfleet import WorkerShape
from control.queue import Queue
from control.state import StateStore
from tests.integration.conftest import Pipeline, write_spec
from tests.integration.test_dispatch import PLAN, TWO_PHASES, wait_for_event

pytestmark = pytest.mark.slow


def control(pipeline: Pipeline, *args: str) -> tuple[int, Any, str]:
    result = subprocess.run(
        [sys.executable, "-m", "control", *args, "--state", str(pipeline.state), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, data, result.stderr


def test_status_shows_every_phase_of_the_latest_run(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.plan(PLAN)
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    assert pipeline.dispatch(spec)[0] == 0
    code, status, _ = control(pipeline, "status")
    assert code == 0
    assert status["status"] == "done"
    assert {p: r["state"] for p, r in status["phases"].items()} == {
        "first": "done",
        "second": "done",
    }
    assert status["merge_branch"].startswith("sa/integration/")
    code, _, err = control(pipeline, "status", "--run", "r-no-such-run")
    assert code == 3 and "no run 'r-no-such-run'" in err
    code, runs, _ = control(pipeline, "runs")
    assert code == 0
    assert [(r["run"], r["status"], r["done"], r["phases"]) for r in runs] == [
        (status["run"], "done", 2, 2)
    ]


def test_retry_revives_a_dead_phase_and_the_same_dispatch_finishes_the_run(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan({"first": {"files": {"first.txt": "wrong\n"}}, **{"second": PLAN["second"]}})
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", list(reversed(TWO_PHASES)))
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1 and events[-1]["dead"].keys() == {"first"}
    code, status, _ = control(pipeline, "status")
    assert list(status["phases"]) == ["first", "second"]  # dependency order, not the spec's
    assert status["phases"]["second"]["state"] == "waiting"
    assert status["phases"]["second"]["waits_for"] == "blocked: first is dead"
    text = subprocess.run(
        [sys.executable, "-m", "control", "status", "--state", str(pipeline.state)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        check=True,
    ).stdout
    assert "blocked: first is dead" in text
    inventory = ["--inventory", str(fleet.inventory)]
    code, _, err = control(pipeline, "logs", "first", "--attempt", "9", *inventory)
    assert code == 3 and "phase 'first' has no dispatched attempt 9 (its attempts: 1, 2)" in err
    code, _, err = control(pipeline, "logs", "third", *inventory)
    assert code == 3 and "has no phase 'third' (its phases: first, second)" in err
    code, _, err = control(pipeline, "retry", "second")
    assert code == 4 and "only dead or cancelled phases can be retried: second is waiting" in err
    code, _, err = control(pipeline, "retry", "first", "nope")
    assert code == 3 and "has no phase 'nope'" in err
    pipeline.plan(PLAN)  # the agent does better now
    code, data, _ = control(pipeline, "retry", "first")
    assert code == 0 and data["retried"] == ["first"]
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    assert events[0]["resumed"] is True
    assert events[-1]["phases"]["first"]["attempt"] == 3  # two failed, then the retry


def test_cancel_stops_a_running_phase_and_ends_the_run(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.plan({"first": {"delay_s": 60, **PLAN["first"]}})
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    process = pipeline.start_dispatch(spec)
    wait_for_event(process, "dispatched")
    code, data, err = control(pipeline, "cancel", "--inventory", str(fleet.inventory))
    assert code == 0, err
    assert sorted(data["cancelled"]) == ["first", "second"]
    assert len(data["stopped"]) == 1
    process.communicate(timeout=60)
    assert process.returncode == 1
    with Queue(fleet.workers["w1"].queue_db, create=False) as queue:
        deadline = time.monotonic() + 30
        while (message := queue.messages()[0]).state == "claimed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert message.state == "cancelled"
    assert not any(r["event"] == "finish" for r in pipeline.agent_runs())
    code, status, _ = control(pipeline, "status")
    assert status["status"] == "cancelled"


def test_merge_builds_the_integration_branch_of_a_run_dispatched_without_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan(PLAN)
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    code, events, _ = pipeline.dispatch(spec, "--no-merge")
    assert code == 0 and events[-1]["merge_branch"] is None
    # No --repo: the run remembers the remote `dispatch --repo` gave it.
    inventory = str(fleet.inventory)
    code, data, err = control(pipeline, "merge", "-i", inventory)
    assert code == 0, err
    assert [m["phase"] for m in data["merged"]] == ["first", "second"]
    assert pipeline.branch_file(data["branch"], "second.txt") == "two\n"


def test_ctrl_c_interrupts_with_130_and_the_same_command_resumes(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan({"first": {"delay_s": 2, **PLAN["first"]}, "second": PLAN["second"]})
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    process = pipeline.start_dispatch(spec)
    wait_for_event(process, "dispatched")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in err
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    assert events[0]["resumed"] is True
    finished = sorted(r["phase"] for r in pipeline.agent_runs() if r["event"] == "finish")
    assert finished == ["first", "second"]


def test_on_a_terminal_dispatch_shows_the_live_view(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.plan(PLAN)
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    command = [c for c in pipeline.dispatch_command(spec) if c != "--json"]
    leader, follower = os.openpty()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(60) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "2/2 phases done" in text
    assert "first" in text and "second" in text and "w1: up" in text
    assert "done; merged into sa/integration/" in text


def test_a_second_dispatch_names_the_live_driver_and_status_says_who_drives(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """One driver per run (issue 9, item 8): a second `control dispatch` of the run says
    which process on which host drives it and exits 4; `status` and `runs` (and the live
    view of `watch`) say who drives it, and once that process is killed, that nothing
    does (at once: it ran on this host)."""
    pipeline.plan({"first": {"delay_s": 2, **PLAN["first"]}, "second": PLAN["second"]})
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    process = pipeline.start_dispatch(spec)
    wait_for_event(process, "dispatched")
    process.send_signal(signal.SIGSTOP)  # alive, and still driving: the run cannot end meanwhile
    host = socket.gethostname()
    code, _, err = pipeline.dispatch(spec)
    line = err.strip()
    assert code == 4 and "\n" not in line, err
    assert f"is driven by process {process.pid} on {host}" in line
    status = json.loads(shown(pipeline, "status", "--json"))
    assert (status["driver"]["pid"], status["driver"]["host"]) == (process.pid, host)
    assert f"running (driven by process {process.pid} on {host})" in shown(pipeline, "status")
    process.send_signal(signal.SIGKILL)  # its lease has not run out, but it is gone
    process.wait()
    status = json.loads(shown(pipeline, "status", "--json"))
    assert status["status"] == "interrupted" and status["driver"] is None
    (listed,) = json.loads(shown(pipeline, "runs", "--json"))
    assert listed["status"] == "interrupted" and listed["driver"] is None
    assert "interrupted (no live orchestrator" in shown(pipeline, "status")
    assert "interrupted" in shown(pipeline, "runs")
    store = StateStore(pipeline.state)
    run = store.latest_run()
    assert run is not None
    console = Console(record=True, width=200)
    console.print(live_view(store, run.id, run.created_at))  # what `control watch` shows
    store.close()
    assert "interrupted (no live orchestrator" in console.export_text()
    code, events, err = pipeline.dispatch(spec)  # taken over at once, and finished
    assert code == 0, err
    assert events[0]["resumed"] is True


def shown(pipeline: Pipeline, *args: str) -> str:
    """What a command prints (in this process: the CLI's own code, without a start-up)."""
    result = CliRunner().invoke(
        app, [*args, "--state", str(pipeline.state)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    return result.stdout
