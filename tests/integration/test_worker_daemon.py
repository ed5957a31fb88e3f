"""The worker daemon as a real process: from a queued phase to a pushed branch, and
through SIGKILL, SIGTERM, cancellation, conflicts, two slots and a rogue agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from control.demo import GIT_ID
from control.git import workspace_root
from control.localfleet import LocalFleet, WorkerShape
from control.messages import PhaseTask, PrerequisiteRef
from control.queue import Message, Queue
from tests.integration.conftest import SCRIPTED_AGENT, Pipeline
from tests.support import alive, descendants, kill_tree

pytestmark = pytest.mark.slow


def task(pipeline: Pipeline, phase: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "run_id": "run1",
        "phase_id": phase,
        "attempt": 1,
        "title": phase,
        "task": f"Do the {phase} phase.",
        "branch": f"sa/{phase}",
        "repo_url": str(pipeline.remote),
        "base_branch": "main",
        "deliverables": (f"{phase}.txt",),
        "verify": (f"test -s {phase}.txt",),
        "agent": {"backend": "command", "command": [sys.executable, str(SCRIPTED_AGENT)]},
        "timeout_s": 60.0,
        "silence_s": 30.0,
    }
    values.update(fields)
    return PhaseTask(**values).to_payload()


def wait_finished(queue: Queue, message_id: int, timeout_s: float = 60) -> Message:
    deadline = time.monotonic() + timeout_s
    while (message := queue.show(message_id)).state in ("pending", "claimed"):
        assert time.monotonic() < deadline, f"message {message_id} still {message.state}"
        time.sleep(0.05)
    return message


def wait_started(pipeline: Pipeline, count: int = 1, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(r["event"] == "start" for r in pipeline.agent_runs()) < count:
        assert time.monotonic() < deadline, "the agent did not start"
        time.sleep(0.05)


def remote_head(pipeline: Pipeline, branch: str) -> str:
    return subprocess.run(
        ["git", "-C", str(pipeline.remote), "rev-parse", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def one_worker(pipeline: Pipeline, **options: Any) -> tuple[LocalFleet, Queue]:
    fleet = pipeline.start_fleet(WorkerShape("w1", slots=options.pop("slots", 1)), **options)
    return fleet, Queue(fleet.workers["w1"].queue_db, create=False)


def test_a_phase_becomes_a_pushed_branch_and_a_full_response(pipeline: Pipeline) -> None:
    pipeline.plan({"api": {"files": {"api.txt": "ready\n"}}})
    _, queue = one_worker(pipeline)
    sent = queue.enqueue(task(pipeline, "api"), key="run1/api/1")
    message = wait_finished(queue, sent.id)
    response = message.response
    assert message.state == "done", message.reason
    assert response["status"] == "done"
    assert response["commit"] == remote_head(pipeline, "sa/api")
    assert response["base_commit"] == remote_head(pipeline, "main")
    assert response["verify"][0]["command"] == "test -s api.txt"
    assert response["verify"][0]["exit_code"] == 0
    assert response["agent"]["status"] == "ok"
    assert {"prepare", "agent", "verify", "push", "total"} <= set(response["durations"])
    assert "scripted-agent: phase api" in Path(response["log"]).read_text()
    assert pipeline.branch_file("sa/api", "api.txt") == "ready\n"


def test_a_worker_killed_mid_phase_is_restarted_and_finishes_it_exactly_once(
    pipeline: Pipeline,
) -> None:
    pipeline.plan({"slow": {"delay_s": 2, "files": {"slow.txt": "done\n"}}})
    fleet, queue = one_worker(pipeline, lease_seconds=3.0)
    sent = queue.enqueue(task(pipeline, "slow"), key="run1/slow/1")
    wait_started(pipeline)
    process = fleet.workers["w1"].process
    assert process is not None
    kill_tree(process.pid)
    process.wait()
    fleet.start("w1")
    message = wait_finished(queue, sent.id)
    assert message.state == "done", message.reason
    assert message.attempts == 2  # claimed again once the dead worker's lease ran out
    runs = pipeline.agent_runs()
    assert [r["event"] for r in runs] == ["start", "start", "finish"]
    assert queue.stale_results(sent.id) == []


def running_slow(pipeline: Pipeline) -> tuple[Queue, int, subprocess.Popen[bytes], list[int]]:
    """One worker whose agent is 30 s into a phase: its inbox, the message's id, the
    daemon's process and the agent's processes."""
    pipeline.plan({"slow": {"delay_s": 30, "files": {"slow.txt": "done\n"}}})
    fleet, queue = one_worker(pipeline)
    sent = queue.enqueue(task(pipeline, "slow"), key="run1/slow/1")
    wait_started(pipeline)
    process = fleet.workers["w1"].process
    assert process is not None
    agents = descendants(process.pid)
    assert agents
    return queue, sent.id, process, agents


def test_sigterm_hands_the_message_back_and_leaves_no_agent_behind(pipeline: Pipeline) -> None:
    queue, sent_id, process, agents = running_slow(pipeline)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    message = queue.show(sent_id)
    assert (message.state, message.reason) == ("pending", "worker stopped before finishing")
    assert not [pid for pid in agents if alive(pid)]
    (beat,) = queue.heartbeats()
    assert beat.status == "stopped"


def test_cancel_stops_the_running_agent_and_ends_the_message_cancelled(
    pipeline: Pipeline,
) -> None:
    pipeline.plan({"slow": {"delay_s": 30, "files": {"slow.txt": "done\n"}}})
    _, queue = one_worker(pipeline)
    sent = queue.enqueue(task(pipeline, "slow"), key="run1/slow/1")
    wait_started(pipeline)
    assert queue.cancel(sent.id) == "claimed"  # flagged: the worker learns it on renew
    message = wait_finished(queue, sent.id, timeout_s=30)
    assert message.state == "cancelled"
    assert message.response["status"] == "cancelled"
    assert not any(r["event"] == "finish" for r in pipeline.agent_runs())


def push_branch(pipeline: Pipeline, branch: str, files: dict[str, str]) -> str:
    work = pipeline.root / f"clone-{branch.replace('/', '-')}"
    subprocess.run(["git", "clone", "-q", str(pipeline.remote), str(work)], check=True)
    for name, text in files.items():
        (work / name).write_text(text)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), *GIT_ID, "commit", "-qm", branch], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", f"HEAD:{branch}"], check=True)
    return remote_head(pipeline, branch)


def test_two_prerequisites_that_conflict_are_reported_with_their_files(
    pipeline: Pipeline,
) -> None:
    left = push_branch(pipeline, "sa/left", {"config.txt": "left\n", "left.txt": "l\n"})
    right = push_branch(pipeline, "sa/right", {"config.txt": "right\n", "right.txt": "r\n"})
    _, queue = one_worker(pipeline)
    prerequisites = (
        PrerequisiteRef("left", "sa/left", left),
        PrerequisiteRef("right", "sa/right", right),
    )
    sent = queue.enqueue(task(pipeline, "join", prerequisites=prerequisites), key="run1/join/1")
    message = wait_finished(queue, sent.id)
    assert message.state == "failed"
    assert message.response["status"] == "conflict"
    assert message.response["conflict"]["files"] == ["config.txt"]
    assert message.response["conflict"]["phase"] == "right"
    assert pipeline.agent_runs() == []  # the agent never ran on a broken checkout


def test_two_slots_run_two_phases_at_once_in_separate_worktrees(pipeline: Pipeline) -> None:
    pipeline.plan(
        {
            "one": {"delay_s": 1.5, "files": {"one.txt": "1\n"}},
            "two": {"delay_s": 1.5, "files": {"two.txt": "2\n"}},
        }
    )
    _, queue = one_worker(pipeline, slots=2)
    first = queue.enqueue(task(pipeline, "one"), key="run1/one/1")
    second = queue.enqueue(task(pipeline, "two"), key="run1/two/1")
    for message_id in (first.id, second.id):
        assert wait_finished(queue, message_id).state == "done"
    events = [(r["event"], r["phase"]) for r in pipeline.agent_runs()]
    assert events[:2] in (
        [("start", "one"), ("start", "two")],
        [("start", "two"), ("start", "one")],
    )  # both started before either finished
    slots = {queue.show(m).response["slot"] for m in (first.id, second.id)}
    assert slots == {"slot0", "slot1"}
    assert pipeline.branch_file("sa/two", "two.txt") == "2\n"
    with pytest.raises(subprocess.CalledProcessError):
        pipeline.branch_file("sa/two", "one.txt")  # separate checkouts, separate branches


def test_a_slot_that_finishes_leases_its_next_message_in_the_same_transaction(
    pipeline: Pipeline,
) -> None:
    """The result of one and the lease of the next are one commit (`complete_and_claim`):
    the next message is claimed at the very instant the first is finished."""
    pipeline.plan(
        {
            "one": {"delay_s": 1.0, "files": {"one.txt": "1\n"}},
            "two": {"files": {"two.txt": "2\n"}},
        }
    )
    _, queue = one_worker(pipeline)
    first = queue.enqueue(task(pipeline, "one"), key="run1/one/1")
    wait_started(pipeline)  # the only slot is busy: "two" waits for it
    second = queue.enqueue(task(pipeline, "two"), key="run1/two/1")
    done_first = wait_finished(queue, first.id)
    done_second = wait_finished(queue, second.id)
    assert (done_first.state, done_second.state) == ("done", "done")
    assert done_second.claimed_at == done_first.finished_at
    assert (done_second.attempts, done_second.fence) == (1, 1)
    assert pipeline.branch_file("sa/two", "two.txt") == "2\n"


def test_a_sandboxed_agent_cannot_write_outside_its_checkout(pipeline: Pipeline) -> None:
    pipeline.plan({"rogue": {"files": {"rogue.txt": "x\n", "../escaped.txt": "gotcha\n"}}})
    fleet, queue = one_worker(pipeline)
    sent = queue.enqueue(task(pipeline, "rogue"), key="run1/rogue/1")
    message = wait_finished(queue, sent.id)
    # The write landed in the sandbox's own throw-away root, never beside the checkout.
    assert message.state == "done", message.reason
    assert not list(fleet.workers["w1"].home.rglob("escaped.txt"))
    assert not list(pipeline.root.rglob("escaped.txt"))


def test_on_a_trusted_host_a_write_outside_the_checkout_fails_the_phase(
    pipeline: Pipeline,
) -> None:
    pipeline.plan({"rogue": {"files": {"rogue.txt": "x\n", "../escaped.txt": "gotcha\n"}}})
    _, queue = one_worker(pipeline, settings={"trusted_host": True})
    sent = queue.enqueue(task(pipeline, "rogue"), key="run1/rogue/1")
    message = wait_finished(queue, sent.id)
    assert message.state == "failed"
    assert "the agent wrote outside its checkout" in (message.reason or "")
    assert "escaped.txt" in (message.reason or "")
    with pytest.raises(subprocess.CalledProcessError):
        remote_head(pipeline, "sa/rogue")  # nothing was pushed


def test_on_a_trusted_host_hidden_writes_at_any_depth_fail_the_phase(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Writes an old two-level look missed: deep in the work directory, in the shared
    clone's hooks and config, and in the worker's ~/.ssh. Each fails its phase, naming
    the path, and nothing is pushed."""
    home = tmp_path / "worker-home"
    (home / ".ssh").mkdir(parents=True)
    fleet, queue = one_worker(pipeline, settings={"trusted_host": True}, env={"HOME": str(home)})
    work = fleet.workers["w1"].home / "work"
    deep = work / "cache" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    clone = workspace_root(work, str(pipeline.remote)) / "repo"
    writes = {
        "deep": (f"echo x > {deep}/canary", deep / "canary"),
        "hook": (f"cp /bin/true {clone}/hooks/post-checkout", clone / "hooks" / "post-checkout"),
        "config": (
            f"printf '[core]\\n\\tfsmonitor = /tmp/evil\\n' >> {clone}/config",
            clone / "config",
        ),
        "ssh": (f"echo attacker >> {home}/.ssh/authorized_keys", home / ".ssh" / "authorized_keys"),
    }
    for phase, (script, path) in writes.items():
        agent = {
            "backend": "command",
            "command": ["/bin/bash", "-c", f"{script}; echo work > {phase}.txt"],
            "success": "exit0",
        }
        payload = task(pipeline, phase, agent=agent, verify=())
        message = wait_finished(queue, queue.enqueue(payload, key=f"run1/{phase}/1").id)
        assert message.state == "failed", (phase, message.reason)
        assert "the agent wrote outside its checkout" in (message.reason or "")
        assert str(path) in (message.reason or ""), (phase, message.reason)
        with pytest.raises(subprocess.CalledProcessError):
            remote_head(pipeline, f"sa/{phase}")


def test_a_malformed_task_fails_with_its_reason(pipeline: Pipeline) -> None:
    _, queue = one_worker(pipeline)
    sent = queue.enqueue({"type": "phase", "version": 1, "phase_id": "x"}, key="bad")
    message = wait_finished(queue, sent.id)
    assert message.state == "failed"
    assert "bad phase task" in (message.reason or "")
    assert json.dumps(message.response)


def test_an_idle_worker_keeps_beating_its_heartbeat(pipeline: Pipeline) -> None:
    """The orchestrator judges liveness by the heartbeat; idle is not dead."""
    _, queue = one_worker(pipeline)  # heartbeat every 0.5 s, slow poll every 30 s
    (first,) = queue.heartbeats()
    deadline = time.monotonic() + 10
    seen = {first.beat_at}
    while len(seen) < 4:
        assert time.monotonic() < deadline, f"only {len(seen)} beats while idle"
        time.sleep(0.1)
        seen |= {beat.beat_at for beat in queue.heartbeats()}
    assert queue.heartbeats()[0].status == "idle"


def install_node(path: Path, version: str) -> None:
    """A stand-in `node` that prints `version`, installed as a package manager would:
    a new file renamed over the old one."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(f"#!/bin/sh\necho v{version}\n")
    staged.chmod(0o755)
    staged.replace(path)


def wait_beat(queue: Queue, status: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while (beat := queue.heartbeats()[0]).status != status:
        assert time.monotonic() < deadline, f"heartbeat still {beat.status}: {beat}"
        time.sleep(0.1)
    return beat


def test_a_node_reinstalled_under_a_running_worker_makes_it_refuse_work_until_restored(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Seen on the fleet: Node changed under a running worker, which went on beating
    `idle` with the versions it started with, and would have taken work."""
    node = tmp_path / "node"
    install_node(node, "20.1.0")
    pipeline.plan({"api": {"files": {"api.txt": "ready\n"}}})
    _, queue = one_worker(pipeline, settings={"node": str(node)}, pins={"w1": {"node": "20.1.0"}})
    assert wait_beat(queue, "idle").versions["node"] == "20.1.0"

    install_node(node, "20.9.9")
    beat = wait_beat(queue, "refusing")
    assert beat.versions["node"] == "20.9.9"
    assert "node is 20.9.9, pinned 20.1.0" in (beat.reason or "")
    sent = queue.enqueue(task(pipeline, "api"), key="run1/api/1")
    time.sleep(1.5)  # three heartbeats: a fit worker would have claimed it by now
    assert queue.show(sent.id).state == "pending"
    assert queue.heartbeats()[0].status == "refusing"

    install_node(node, "20.1.0")
    message = wait_finished(queue, sent.id)
    assert message.state == "done", message.reason
    assert queue.heartbeats()[0].reason is None


def test_verify_commands_run_without_network_when_the_task_says_so(pipeline: Pipeline) -> None:
    interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,"
    pipeline.plan({"off": {"files": {"off.txt": "x\n"}}, "on": {"files": {"on.txt": "x\n"}}})
    _, queue = one_worker(pipeline)
    offline = queue.enqueue(
        task(pipeline, "off", verify=(interfaces,), verify_network=False), key="run1/off/1"
    )
    online = queue.enqueue(task(pipeline, "on", verify=(interfaces,)), key="run1/on/1")
    off, on = wait_finished(queue, offline.id), wait_finished(queue, online.id)
    assert off.state == "done" and on.state == "done", (off.reason, on.reason)
    assert off.response["verify"][0]["output_tail"] == "lo,"
    assert on.response["verify"][0]["output_tail"] != "lo,"  # the host's own interfaces


def test_the_worker_prunes_old_acknowledged_messages_from_its_inbox(
    pipeline: Pipeline,
) -> None:
    """A year of use does not slow the inbox: acknowledged messages past `prune_days`
    are removed by the worker itself; unacknowledged answers are kept."""
    fleet = pipeline.start_fleet(WorkerShape("w1"), settings={"prune_days": 0.0001})
    fleet.stop("w1")
    db = fleet.workers["w1"].queue_db
    with Queue(db, create=False) as queue:
        for key in ("old-acked", "old-unread"):
            queue.enqueue({"type": "nothing"}, key=key)
            claimed = queue.claim("someone", 60)
            assert claimed is not None
            queue.complete(claimed.id, claimed.fence, {"status": "done"})
            if key == "old-acked":
                queue.ack(claimed.id)
    time.sleep(9)  # 0.0001 days
    fleet.start("w1")
    fleet.wait_ready()
    deadline = time.monotonic() + 20
    while True:
        with Queue(db, create=False) as queue:
            keys = [m.key for m in queue.messages()]
        if keys == ["old-unread"]:
            break
        assert time.monotonic() < deadline, keys
        time.sleep(0.2)
