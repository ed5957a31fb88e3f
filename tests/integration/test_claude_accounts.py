"""Each Claude Code account on a worker has its own configuration directory
($CLAUDE_CONFIG_DIR: its login and its sessions), seen by the real worker running the
fake `claude`, which keeps its login and sessions there as the real one does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from control.localfleet import WorkerShape
from control.messages import PhaseTask
from control.queue import Queue
from tests.integration.conftest import Pipeline
from tests.integration.test_worker_daemon import wait_finished

pytestmark = pytest.mark.slow


def _accounts(root: Path, keys: dict[str, str]) -> Path:
    accounts = root / "accounts"
    accounts.mkdir(mode=0o700)
    for name, line in keys.items():
        (accounts / f"{name}.env").write_text(line + "\n")
        (accounts / f"{name}.env").chmod(0o600)
    return accounts


def _task(pipeline: Pipeline, phase: str, account: str) -> dict[str, Any]:
    return PhaseTask(
        run_id="run1", phase_id=phase, attempt=1, title=phase, task=f"Do the {phase} phase.",
        branch=f"sa/{phase}", repo_url=str(pipeline.remote), base_branch="main",
        deliverables=(f"{phase}.txt",), verify=(),
        agent={"backend": "claude-code", "account": account}, timeout_s=60.0, silence_s=30.0,
    ).to_payload()  # fmt: skip


def _run(pipeline: Pipeline, queue: Queue, phase: str, account: str) -> tuple[Any, Any]:
    sent = queue.enqueue(_task(pipeline, phase, account), key=f"run1/{phase}/1")
    message = wait_finished(queue, sent.id)
    return message, json.loads((pipeline.agent_io / "claude-dump.json").read_text())


def _start(pipeline: Pipeline, settings: dict[str, Any]) -> Queue:
    scenario = pipeline.agent_io / "scenario.json"
    scenario.write_text(json.dumps({"scenario": "success", "files": {
        "one.txt": "1\n", "two.txt": "2\n"}}))  # fmt: skip
    fleet = pipeline.start_fleet(
        WorkerShape("w1"), settings=settings,
        env={"FAKE_CLAUDE_SCENARIO_FILE": str(scenario),
             "FAKE_CLAUDE_DUMP": str(pipeline.agent_io / "claude-dump.json")},
    )  # fmt: skip
    return Queue(fleet.workers["w1"].queue_db, create=False)


def test_sandboxed_each_account_runs_in_its_own_configuration_directory(
    pipeline: Pipeline,
) -> None:
    accounts = _accounts(
        pipeline.root,
        {
            "team-a": "ANTHROPIC_API_KEY=sk-ant-team-a-0000000",
            "team-b": "ANTHROPIC_API_KEY=sk-ant-team-b-0000000",
        },
    )
    queue = _start(pipeline, {"accounts_dir": str(accounts)})
    seen = {}
    for phase, account in (("one", "team-a"), ("two", "team-b")):
        message, dump = _run(pipeline, queue, phase, account)
        assert message.state == "done", message.reason
        seen[account] = Path(dump["env"]["CLAUDE_CONFIG_DIR"])
        # In the phase's own HOME, never a directory later phases of other runs would read.
        assert seen[account] == Path(dump["env"]["HOME"]) / ".claude-accounts" / account
    assert seen["team-a"] != seen["team-b"]


def test_on_a_trusted_host_an_accounts_login_is_its_own(pipeline: Pipeline) -> None:
    """`claude /login` done for one account (its .credentials.json in its directory) logs
    in that account only; another account on the same host is not logged in."""
    accounts = _accounts(pipeline.root, {"team-a": "# logged in with claude /login",
                                         "team-b": "# not logged in"})  # fmt: skip
    root = pipeline.root / "claude-accounts"
    (root / "team-a").mkdir(parents=True, mode=0o700)
    (root / "team-a" / ".credentials.json").write_text('{"claudeAiOauth": {}}')
    queue = _start(pipeline, {"accounts_dir": str(accounts), "claude_config_root": str(root),
                              "trusted_host": True})  # fmt: skip
    message, dump = _run(pipeline, queue, "one", "team-a")
    assert message.state == "done", message.reason
    assert dump["env"]["CLAUDE_CONFIG_DIR"] == str(root / "team-a") and dump["logged_in"]
    # The session is that account's: its transcript is in its directory.
    assert list((root / "team-a" / "projects").glob("*/*.jsonl"))
    message, dump = _run(pipeline, queue, "two", "team-b")
    assert dump["env"]["CLAUDE_CONFIG_DIR"] == str(root / "team-b") and not dump["logged_in"]
    assert message.state == "failed" and "Not logged in" in (message.reason or "")
    assert not (root / "team-b" / ".credentials.json").exists()


def test_without_an_account_claude_keeps_its_default_directory(pipeline: Pipeline) -> None:
    queue = _start(pipeline, {})
    sent = queue.enqueue(PhaseTask(
        run_id="run1", phase_id="one", attempt=1, title="one", task="Do the one phase.",
        branch="sa/one", repo_url=str(pipeline.remote), base_branch="main",
        deliverables=("one.txt",), agent={"backend": "claude-code"}, timeout_s=60.0,
        silence_s=30.0,
    ).to_payload(), key="run1/one/1")  # fmt: skip
    wait_finished(queue, sent.id)
    dump = json.loads((pipeline.agent_io / "claude-dump.json").read_text())
    assert dump["env"]["CLAUDE_CONFIG_DIR"] is None
