"""Ctrl-C and SIGTERM stop `control dispatch` at once over the ansible transport, and the
run resumes; a relative `--inventory` (as the README writes it) reaches the hosts.

Real processes throughout: local workers, `control dispatch` as a subprocess whose
workers are `ansible_connection: local` hosts reached through ansible-runner.
ansible-runner, given no cancel callback, installs its own SIGINT and SIGTERM
handlers for good: the command then ignored both and only SIGKILL stopped it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from control.localfleet import LocalFleet, WorkerShape
from tests.integration.conftest import Pipeline, parse_events, write_spec
from tests.integration.test_dispatch import PLAN, TWO_PHASES, wait_for_event

pytestmark = pytest.mark.slow

CONTROL = Path(sys.executable).parent / "control"


def ansible_inventory(fleet: LocalFleet) -> None:
    """The fleet's inventory, its workers now reached through Ansible on this machine."""
    for worker in fleet.workers.values():
        (fleet.inventory / "host_vars" / f"{worker.name}.yml").write_text(
            yaml.safe_dump(
                {
                    "superagent_transport": "ansible",
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "superagent_control": str(CONTROL),
                    "superagent_queue_db": str(worker.queue_db),
                    "superagent_capabilities": list(worker.shape.capabilities),
                }
            )
        )


def relative_dispatch(pipeline: Pipeline, spec: Path) -> list[str]:
    """The pipeline's dispatch command with `--inventory` relative to the test directory."""
    command = pipeline.dispatch_command(spec)
    at = command.index("--inventory") + 1
    command[at] = str(Path(command[at]).relative_to(pipeline.root))
    return command


def test_health_with_a_relative_inventory_reaches_ansible_hosts(pipeline: Pipeline) -> None:
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    ansible_inventory(fleet)
    result = subprocess.run(
        [sys.executable, "-m", "control", "health", "--inventory", "fleet/inventory", "--json"],
        capture_output=True,
        text=True,
        cwd=pipeline.root,
        timeout=120,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, (report, result.stderr)
    assert [(w["worker"], w["reachable"]) for w in report["workers"]] == [("w1", True)]


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_dispatch_over_ansible_and_the_run_resumes(
    pipeline: Pipeline, tmp_path: Path, sig: signal.Signals, code: int, word: str
) -> None:
    pipeline.plan({"first": {"delay_s": 8, **PLAN["first"]}, "second": PLAN["second"]})
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    ansible_inventory(fleet)
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    command = relative_dispatch(pipeline, spec)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=pipeline.root,
    )
    pipeline.dispatches.append(process)
    wait_for_event(process, "dispatched", timeout_s=120)  # enqueued through ansible-runner
    time.sleep(1.0)  # into the next tick: a poll of the fleet through ansible-runner
    process.send_signal(sig)
    # No timing is asserted (a shared machine proves nothing): a dispatch that ignored
    # the signal would run on to its end and exit 0, or be killed here.
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"control dispatch ignored {sig.name}")
    assert process.returncode == code, err
    assert word in err
    resumed = subprocess.run(
        command, capture_output=True, text=True, cwd=pipeline.root, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    events = parse_events(resumed.stdout)
    assert events[0]["resumed"] is True
    assert events[-1]["status"] == "done"
    finished = sorted(r["phase"] for r in pipeline.agent_runs() if r["event"] == "finish")
    assert finished == ["first", "second"]  # each agent ran to its end exactly once
