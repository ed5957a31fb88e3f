"""The Slack agent acting on a real local fleet: `enqueue` puts the text into a worker's
inbox byte for byte and posts the answer in the thread when it comes; `dispatch` runs
a spec of the configured directory and reports the run in the thread."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control.inventory import load_inventory
from control.localfleet import LocalFleet
from control.queue import Queue
from tests.injection import corpus
from tests.integration.conftest import Pipeline, answering_fleet, write_spec
from tests.integration.test_slack_agent import ACTOR, Rig, typed

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(pipeline: Pipeline) -> LocalFleet:
    return answering_fleet(pipeline)


@pytest.fixture
def rig(
    pipeline: Pipeline, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    specs = tmp_path / "specs"
    specs.mkdir()
    built = Rig(
        tmp_path,
        monkeypatch,
        inventory=fleet.inventory,
        workers=load_inventory(fleet.inventory),
        settings={"specs_dir": str(specs)},
        state=pipeline.state,
    )
    yield built
    built.close()


def inbox(fleet: LocalFleet) -> list[Any]:
    with Queue(fleet.workers["w1"].queue_db, create=False) as queue:
        return queue.messages()


def test_enqueue_reaches_the_inbox_verbatim_and_its_answer_comes_back_in_the_thread(
    rig: Rig, fleet: LocalFleet, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    task = "Summarise the repo.\n" + "\n".join(corpus(canary)) + "\n<!channel> & <@U0ADMIN>"
    prompt = rig.ask(ACTOR, "<@U0BOT> enqueue w1 " + typed(task))
    assert "send w1 a free-form task" in prompt["text"]
    # Slack delivers the command again (it thought the first delivery failed): no
    # second question.
    rig.socket.wait_ack(rig.socket.redeliver(rig.envelope, 1, "timeout"))
    assert inbox(fleet) == []  # nothing sent before the click
    assert "sent to w1 as message" in rig.click(ACTOR, prompt)["text"]
    rig.socket.wait_ack(rig.socket.redeliver(rig.click_envelope))  # the click, again: sent once
    (message,) = inbox(fleet)
    assert message.payload["text"] == task  # byte for byte, as typed
    before = len(rig.slack.posts)
    (answer,) = rig.wait_posts(before + 1)[before:]
    assert answer["thread_ts"] == prompt["thread_ts"]
    assert answer["text"].startswith("answer from w1 (done)")
    assert "<!channel>" not in answer["text"] and "<@U0ADMIN>" not in answer["text"]
    time.sleep(1)  # posted once, not at every poll
    assert len(rig.slack.posts) == before + 1
    (message,) = inbox(fleet)
    assert message.state == "done" and message.acked_at is not None
    assert not canary.exists()


def test_health_polls_the_fleet(rig: Rig, fleet: LocalFleet) -> None:
    deadline = time.monotonic() + 30  # the restarted worker's first beat replaces "stopped"
    while not (reply := rig.ask(ACTOR, "<@U0BOT> health"))["text"].startswith("healthy"):
        assert time.monotonic() < deadline, reply["text"]
        time.sleep(0.5)
    assert reply["text"] == "healthy\nw1: ok"
    fleet.stop("w1")
    reply = rig.ask(ACTOR, "<@U0BOT> health")
    assert "NOT healthy" in reply["text"] and "w1: the worker is stopped" in reply["text"]


def test_dispatch_runs_a_spec_of_the_directory_and_reports_in_the_thread(
    rig: Rig, pipeline: Pipeline
) -> None:
    assert rig.config.specs_dir is not None
    spec = write_spec(
        rig.config.specs_dir / "one.json",
        [{"id": "only", "title": "Only", "task": "Write a.txt", "deliverables": ["a.txt"]}],
    )
    document = json.loads(spec.read_text())
    document["repo"]["url"] = str(pipeline.remote)
    spec.write_text(json.dumps(document))
    pipeline.plan({"only": {"files": {"a.txt": "a\n"}}})
    outside = rig.config.specs_dir.parent / "outside.json"
    outside.write_text(spec.read_text())
    for name in ("../outside.json", "/etc/passwd", "nope.json"):
        reply = rig.ask(ACTOR, f"<@U0BOT> dispatch {name}")
        assert "from the specs directory" in reply["text"] or "no spec" in reply["text"]
    (rig.config.specs_dir / "bad.json").write_text('{"version": 1}')
    reply = rig.ask(ACTOR, "<@U0BOT> dispatch bad.json")
    assert "invalid spec" in reply["text"] and not reply.get("blocks")
    prompt = rig.ask(ACTOR, "<@U0BOT> dispatch one.json")
    assert "dispatch one.json (1 phase)" in prompt["text"]
    assert "dispatching one.json" in rig.click(ACTOR, prompt)["text"]
    before = len(rig.slack.posts)
    started, ended = rig.wait_posts(before + 2)[before : before + 2]
    assert started["text"].startswith("run r") and started["text"].endswith(" started")
    run_id = started["text"].split()[1]
    assert ended["text"] == f"run {run_id} done", ended["text"]
    assert {p["thread_ts"] for p in (started, ended)} == {prompt["thread_ts"]}
    assert pipeline.branch_file("sa/only", "a.txt") == "a\n"
