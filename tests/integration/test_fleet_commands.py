"""`control health`, `workers`, `logs` and `enqueue` against real local workers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from control.localfleet import WorkerShape
from control.queue import Queue
from tests.integration.conftest import Pipeline, answering_fleet, write_spec

pytestmark = pytest.mark.slow


def control(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def health(pipeline: Pipeline) -> tuple[int, dict[str, Any]]:
    assert pipeline.fleet is not None
    inventory = str(pipeline.fleet.inventory)
    result = control("health", "--inventory", inventory, "--state", str(pipeline.state), "--json")
    return result.returncode, json.loads(result.stdout)


def test_health_is_clean_on_a_healthy_fleet_and_names_a_stopped_worker(
    pipeline: Pipeline,
) -> None:
    fleet = pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    code, report = health(pipeline)
    assert code == 0, report
    assert report["healthy"] is True
    assert {w["worker"]: w["status"] for w in report["workers"]} == {"w1": "idle", "w2": "idle"}
    fleet.stop("w2")
    code, report = health(pipeline)
    assert code == 1
    (w2,) = [w for w in report["workers"] if w["worker"] == "w2"]
    assert w2["problems"] == ["the worker is stopped"]


def test_a_worker_with_another_node_refuses_work_and_health_says_why(pipeline: Pipeline) -> None:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    if node.returncode != 0:
        pytest.skip("node is not installed here")
    found = node.stdout.strip().removeprefix("v")
    fleet = pipeline.start_fleet(
        WorkerShape("w1"), WorkerShape("w2"), pins={"w2": {"node": "18.19.0"}}
    )
    assert fleet.workers["w2"].process is not None
    assert fleet.workers["w2"].process.wait(30) == 1  # the daemon refused and exited
    check = control("worker", "check", "--config", str(fleet.workers["w2"].config), "--json")
    assert check.returncode == 1
    assert f"node is {found}, pinned 18.19.0" in json.loads(check.stdout)["problems"]
    code, report = health(pipeline)
    assert code == 1
    (w2,) = [w for w in report["workers"] if w["worker"] == "w2"]
    assert w2["status"] == "refusing"
    assert any(f"node is {found}, pinned 18.19.0" in p for p in w2["problems"])
    (w1,) = [w for w in report["workers"] if w["worker"] == "w1"]
    assert w1["problems"] == []


def test_health_compares_reported_versions_with_the_inventory_pins(pipeline: Pipeline) -> None:
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    (fleet.inventory / "group_vars").mkdir()
    (fleet.inventory / "group_vars" / "all.yml").write_text("---\nnodejs_version: '99.1.2'\n")
    code, report = health(pipeline)
    (w1,) = report["workers"]
    node = (w1.get("versions") or {}).get("node")
    if node is None:
        pytest.skip("node is not installed here, so the worker reports no version")
    assert code == 1
    assert f"node {node}, pinned 99.1.2" in w1["problems"]


def test_workers_lists_the_inventory(pipeline: Pipeline) -> None:
    fleet = pipeline.start_fleet(WorkerShape("w1", ("linux", "gpu"), slots=2))
    result = control("workers", "--inventory", str(fleet.inventory), "--json")
    assert result.returncode == 0
    (w1,) = json.loads(result.stdout)
    assert (w1["name"], w1["slots"], sorted(w1["capabilities"])) == ("w1", 2, ["gpu", "linux"])


def test_logs_shows_the_workers_log_of_a_phase(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.plan({"only": {"files": {"only.txt": "x\n"}}})
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(
        tmp_path / "spec.json",
        [
            {
                "id": "only",
                "title": "Only",
                "task": "Write only.txt with an x in it, nothing more.",
                "deliverables": ["only.txt"],
                "verify": ["test -s only.txt"],
            }
        ],
    )
    code, _, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    result = control(
        "logs",
        "only",
        "--inventory",
        str(fleet.inventory),
        "--state",
        str(pipeline.state),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["worker"] == "w1" and shown["state"] == "done"
    assert "scripted-agent: phase only" in shown["text"]
    missing = control(
        "logs", "nope", "--inventory", str(fleet.inventory), "--state", str(pipeline.state)
    )
    assert missing.returncode == 3 and "has no phase 'nope' (its phases: only)" in missing.stderr


def test_enqueue_sends_free_form_text_from_stdin_to_one_worker(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    text = f"Summarise the repo. $(touch {canary}) `touch {canary}` {{{{ lookup('pipe','id') }}}}"
    fleet = answering_fleet(pipeline)
    result = control(
        "enqueue",
        "w1",
        "--inventory",
        str(fleet.inventory),
        "--state",
        str(pipeline.state),
        "--json",
        stdin=text,
    )
    assert result.returncode == 0, result.stderr
    sent = json.loads(result.stdout)
    with Queue(fleet.workers["w1"].queue_db, create=False) as queue:
        deadline = time.monotonic() + 60
        while queue.show(sent["id"]).state in ("pending", "claimed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        message = queue.show(sent["id"])
    assert message.payload["text"] == text
    assert message.state == "done", message.reason
    assert message.response["status"] == "done"
    assert Path(message.response["directory"], "notes.md").read_text() == "ok\n"
    assert not canary.exists()
    # `control health` stores the answer, then acknowledges it; `control answers` shows it.
    control("health", "--inventory", str(fleet.inventory), "--state", str(pipeline.state))
    with Queue(fleet.workers["w1"].queue_db, create=False) as queue:
        assert queue.show(sent["id"]).acked_at is not None
    shown = control("answers", "--state", str(pipeline.state), "--json")
    assert shown.returncode == 0, shown.stderr
    (answer,) = json.loads(shown.stdout)["answers"]
    assert (answer["key"], answer["state"]) == (sent["key"], "answered")
    assert answer["response"]["response"]["status"] == "done"
    refused = control("enqueue", "nobody", "--inventory", str(fleet.inventory), stdin="x")
    assert refused.returncode == 3 and "no worker 'nobody'" in refused.stderr
