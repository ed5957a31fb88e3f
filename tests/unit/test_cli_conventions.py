"""One CLI, one set of conventions: the same name means the same thing in every command.

Walks the whole command tree: `--state` is the state database wherever it appears
(and honours SUPERAGENT_STATE_DB), `--inventory` the fleet (SUPERAGENT_INVENTORY), a
run is chosen with `--run` everywhere, `--help` shows real default paths and no
`<bool>` metavar, `--json` says what it prints, an unknown `--agent` is refused at
once, and every table reads at 80 columns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from control.cli import app
from control.messages import PERMISSION_MODES
from control.paths import default_home
from control.queue import Queue
from control.spec import AGENT_BACKENDS, schema
from control.state import StateStore
from control.worker.agents import backend_names

EXAMPLES = Path(__file__).resolve().parents[2] / "specs" / "examples"

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "tests" / "fixtures" / "inventory" / "fleet"
WEBAPP = ROOT / "specs" / "examples" / "webapp.json"
runner = CliRunner()


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _walk(sub, (*path, name))
    return found


COMMANDS = [(p, c) for p, c in _walk(typer.main.get_command(app)) if p]


def _options(command: Any) -> dict[str, Any]:
    return {o: p for p in command.params for o in getattr(p, "opts", ())}


def test_state_and_inventory_mean_one_thing_and_honour_their_variables() -> None:
    states = inventories = 0
    for path, command in COMMANDS:
        options = _options(command)
        if "--state" in options:
            states += 1
            assert options["--state"].envvar == "SUPERAGENT_STATE_DB", path
            assert options["--state"].help == "The orchestrator's state database.", path
        if "--inventory" in options:
            inventories += 1
            assert options["--inventory"].envvar == "SUPERAGENT_INVENTORY", path
    assert states >= 9 and inventories >= 8  # validate and plan included


def test_a_run_is_chosen_with_run_everywhere() -> None:
    for name in ("status", "watch", "merge", "logs", "retry", "cancel"):
        command = dict(COMMANDS)[(name,)]
        assert "--run" in _options(command), name
        assert not any(
            p.param_type_name == "argument" and "run" in (p.name or "") for p in command.params
        ), name


def test_help_shows_real_defaults_no_bool_metavar_and_what_json_prints() -> None:
    for path, _ in COMMANDS:
        result = runner.invoke(app, [*path, "--help"], terminal_width=80)
        assert result.exit_code == 0, path
        assert "<bool>" not in result.stdout, path
        assert "$SUPERAGENT_HOME" not in result.stdout, path
        if "--json" in result.stdout:
            assert "JSON" in result.stdout.split("--json", 1)[1].split("\n")[0], path
    status = runner.invoke(app, ["status", "--help"], terminal_width=200).stdout
    assert str(default_home() / "state.db") in status
    dispatch = runner.invoke(app, ["dispatch", "--help"], terminal_width=200).stdout
    assert "JSON lines" in dispatch


def test_validate_and_plan_read_the_inventory_variable() -> None:
    env = {"SUPERAGENT_INVENTORY": str(FLEET)}
    result = runner.invoke(app, ["validate", str(WEBAPP), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inventory_checked"] is True
    planned = runner.invoke(app, ["plan", str(WEBAPP), "--json"], env=env)
    assert planned.exit_code == 0, planned.output
    assert {w["name"] for w in json.loads(planned.stdout)["workers"]} == {
        "server",
        "laptop",
        "wsl",
    }
    # --workers asks for a what-if fleet: the variable's inventory gives way to it.
    what_if = runner.invoke(app, ["plan", str(WEBAPP), "--workers", "2", "--json"], env=env)
    assert what_if.exit_code == 0, what_if.output
    assert len(json.loads(what_if.stdout)["workers"]) == 2
    both = runner.invoke(app, ["plan", str(WEBAPP), "--workers", "2", "--inventory", str(FLEET)])
    assert both.exit_code == 2 and "not both" in both.output


@pytest.mark.parametrize(
    "args",
    [
        ["dispatch", str(WEBAPP), "--inventory", str(FLEET), "--agent", "claude"],
        ["enqueue", "server", "--inventory", str(FLEET), "--agent", "claude"],
    ],
    ids=["dispatch", "enqueue"],
)
def test_an_unknown_agent_is_refused_at_once(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, [*args, "--state", str(tmp_path / "state.db")], input="task\n")
    assert result.exit_code == 2
    known = "claude-code, codex, command, gemini, opencode, replay"
    assert f"unknown agent backend 'claude'; known: {known}" in result.output
    assert not (tmp_path / "state.db").exists()  # nothing was started


def test_the_agent_backends_are_one_list() -> None:
    enum = schema()["$defs"]["agent"]["properties"]["backend"]["enum"]
    assert list(AGENT_BACKENDS) == sorted(enum) == backend_names()


def test_the_permission_modes_are_one_list() -> None:
    """The schema lets a spec say what the worker then passes to Claude Code: the same."""
    enum = schema()["$defs"]["agent"]["properties"]["permission_mode"]["enum"]
    assert list(PERMISSION_MODES) == enum


def test_a_relative_repo_override_is_refused_before_any_run(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    result = runner.invoke(
        app,
        ["dispatch", str(WEBAPP), "-i", str(FLEET), "--state", str(state), "--repo", "a/b.git"],
    )
    assert result.exit_code == 2
    assert "--repo 'a/b.git' is a relative path" in result.output
    assert not state.exists()


def test_a_relative_repo_is_refused_by_merge(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.create_run(str(WEBAPP), "h", {"phases": []}, [])
    store.close()
    state = str(tmp_path / "state.db")
    result = runner.invoke(app, ["merge", "--state", state, "-i", str(FLEET), "--repo", "a/b.git"])
    assert result.exit_code == 2
    assert "repo 'a/b.git' is a relative path" in result.output


def test_completion_is_installable() -> None:
    shown = runner.invoke(app, ["--show-completion", "bash"])
    assert shown.exit_code == 0 and "_control_completion" in shown.stdout
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "control")],
        env={**os.environ, "_CONTROL_COMPLETE": "complete_bash", "COMP_WORDS": "control sta"}
        | {"COMP_CWORD": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.stdout.split() == ["status"]


# -- 80 columns ------------------------------------------------------------------------


def _at_80(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "control", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        check=False,
    )
    assert result.stderr == "" or result.returncode != 0, result.stderr
    return result.stdout


def _reads_at_80(text: str, headers: list[str], long_text: str) -> None:
    lines = text.splitlines()
    table = [line for line in lines if not line.startswith(("run ", "reason: "))]
    assert all(len(line.rstrip()) <= 80 for line in table), text
    header = next(line for line in lines if line.split()[:1] == [headers[0]])
    assert header.split() == headers, text  # every header whole
    if not long_text:
        return
    # The long text (in the last column) wraps at words in a column of 20 or more, not
    # one word per line, and reads whole from top to bottom.
    start = header.index(headers[-1])
    assert len(header.rstrip()) - start >= 20 or 80 - start >= 20, text
    column = " ".join(line[start:].strip() for line in table[table.index(header) :])
    assert long_text in column, text


def test_status_and_runs_read_at_80_columns(tmp_path: Path) -> None:
    reason = (
        "verify command failed (exit 1): npm test -- --runInBand --coverage in the "
        "checkout of the worker (attempt 2 of 2)"
    )
    store = StateStore(tmp_path / "state.db")
    spec = {
        "phases": [
            {"id": "api-authentication-service", "depends_on": []},
            {"id": "frontend-login", "depends_on": ["api-authentication-service"]},
        ]
    }
    store.create_run(
        str(tmp_path / "a-rather-long-directory-name" / "spec.json"),
        "hash",
        spec,
        [("frontend-login", "sa/frontend-login"), ("api-authentication-service", "sa/api")],
    )
    with store.write() as conn:
        conn.execute(
            "UPDATE phases SET state = 'dead', attempt = 2, worker = 'alpha-workstation', "
            "reason = ? WHERE phase_id = 'api-authentication-service'",
            (reason,),
        )
    store.close()
    state = ["--state", str(tmp_path / "state.db")]
    status = _at_80("status", *state)
    _reads_at_80(status, ["phase", "state", "worker", "try", "detail"], reason)
    assert status.index("api-authentication-s") < status.index("frontend-login")
    assert "blocked:api-authentication-serviceisdead" in "".join(status.split())
    runs = _at_80("runs", *state)
    _reads_at_80(runs, ["run", "status", "done", "started", "driver", "spec"], "")
    store = StateStore(tmp_path / "state.db")
    (run,) = store.runs(1)
    store.close()
    assert run.id in runs.split(), runs  # whole, to paste into --run (the spec's path wraps)


def test_health_and_workers_read_at_80_columns(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    workers:\n      hosts:\n        alpha-workstation:\n"
    )
    (inventory / "host_vars" / "alpha-workstation.yml").write_text(
        "superagent_transport: local\n"
        f"superagent_queue_db: {tmp_path / 'queue.db'}\n"
        "superagent_capabilities: [linux, docker, gpu, windows-files, a-long-capability]\n"
    )
    StateStore(tmp_path / "x.db").close()
    from control.queue import Queue  # noqa: PLC0415

    Queue(tmp_path / "queue.db").close()
    health = _at_80("health", "--inventory", str(inventory), "--state", str(tmp_path / "x.db"))
    _reads_at_80(
        health,
        ["worker", "status", "beat", "queue", "versions", "problems"],
        "no heartbeat: the worker has never run",
    )
    workers = _at_80("workers", "--inventory", str(inventory), "--state", str(tmp_path / "x.db"))
    _reads_at_80(workers, ["worker", "transport", "reach", "slots", "capabilities", "seen"], "")


def test_queue_list_reads_at_80_columns(tmp_path: Path) -> None:
    reason = (
        "verify command failed (exit 1): npm test -- --runInBand --coverage in the "
        "checkout of the worker (attempt 2 of 2)"
    )
    with Queue(tmp_path / "queue.db") as queue:
        queue.enqueue({"type": "phase"}, key="r20261130-054605-2dfc/api-authentication-service/2")
        claimed = queue.claim("alpha-workstation/slot0", lease_seconds=60)
        assert claimed is not None
        queue.fail(claimed.id, claimed.fence, reason, {})
        queue.enqueue({"type": "phase"}, key="r20261130-054605-2dfc/frontend-login/1")
        assert queue.claim("alpha-workstation/slot1", lease_seconds=60) is not None
    listed = _at_80("queue", "list", "--db", str(tmp_path / "queue.db"))
    _reads_at_80(listed, ["id", "key", "state", "tries", "enqueued", "detail"], reason)
    keys = _column(listed, ["id", "key", "state", "tries", "enqueued", "detail"], "key", "")
    assert "r20261130-054605-2dfc/api-authentication-service/2" in keys  # folded, not cut
    details = _column(listed, ["id", "key", "state", "tries", "enqueued", "detail"], "detail")
    assert "held by alpha-workstation/slot1" in details


def _column(text: str, headers: list[str], name: str, joint: str = " ") -> str:
    """The text of one column of a table, top to bottom, its lines joined by `joint`."""
    lines = text.splitlines()
    header = next(line for line in lines if line.split() == headers)
    start = header.index(name)
    following = headers[headers.index(name) + 1 :]
    end = header.index(following[0], start) if following else None
    rows = lines[lines.index(header) + 2 :]  # below the rule
    return joint.join(line[start:end].strip() for line in rows)


def test_answers_read_at_80_columns(tmp_path: Path) -> None:
    answer = (
        "The flaky test in tests/test_api.py fails because the fixture reuses a port; "
        "I changed it to pick a free port and the suite passes ten times in a row."
    )
    key = "freeform/2026-11-30-a1b2c3d4e5f6"
    store = StateStore(tmp_path / "state.db")
    store.record_freeform(key, "alpha-workstation")
    store.store_freeform_response(
        key, 7, {"state": "done", "response": {"status": "done", "summary": answer}}
    )
    store.close()
    shown = _at_80("answers", "--state", str(tmp_path / "state.db"))
    _reads_at_80(shown, ["sent", "worker", "state", "answer"], answer)
    assert "alpha-workstation " in shown and key in shown  # whole, on their lines


def test_plan_reads_at_80_columns_and_a_huge_one_stays_short(tmp_path: Path) -> None:
    shown = _at_80("plan", str(EXAMPLES / "webapp.json"), "--workers", "2")
    for headers in (
        ["phase", "worker", "start", "end"],
        ["machines", "makespan", "vs", "1", "machine"],
    ):
        _reads_at_80(shown, headers, "")
    assert "windows-paths" in shown and "1.43x" in shown
    phases = [
        {"id": f"p-{i}", "title": f"P {i}", "task": "x", "deliverables": [f"p{i}.txt"]}
        for i in range(500)
    ]
    spec = tmp_path / "wide.json"
    spec.write_text(
        json.dumps(
            {"version": 1, "name": "wide", "repo": {"url": "git@h:t/w.git"}, "phases": phases}
        )
    )
    wide = _at_80("plan", str(spec), "--workers", "3")
    assert len(wide.splitlines()) < 80  # not a line per phase, nor a wave of 500 names
    words = " ".join(wide.split())
    assert "and 489 more" in words and "and 460 more runs" in words and "--json" in words


def test_events_read_at_80_columns(tmp_path: Path) -> None:
    reason = (
        "verify command failed (exit 1): npm test -- --runInBand --coverage in the "
        "checkout of the worker (attempt 2 of 2)"
    )
    store = StateStore(tmp_path / "state.db")
    run = store.create_run(str(tmp_path / "spec.json"), "h", {"phases": []}, [("api", "sa/api")])
    store.event(run, "phase_failed", "api", "alpha-workstation", {"reason": reason})
    store.close()
    shown = _at_80("events", "--state", str(tmp_path / "state.db"))
    # A log line stays one whole line (the terminal wraps it; grep finds it): never cut
    # to the width, never an ellipsis.
    (failed,) = [line for line in shown.splitlines() if "phase_failed" in line]
    assert failed.endswith(f"reason={reason}") and "…" not in shown, shown
