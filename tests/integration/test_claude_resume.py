"""Claude Code resumed through a real worker: a phase whose verify fails once is sent back
to the same Claude Code session (`--resume <session id>`), told what failed, and passes.

`control dispatch` as a process, a real worker daemon taking the phase from its inbox,
the fake `claude` (tests/fakes/bin/claude: the real CLI's flags, its sessions kept in its
configuration directory as the real one keeps them) recording each run's argv.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from control.localfleet import WorkerShape
from control.state import StateStore
from tests.integration.conftest import Pipeline, write_spec

pytestmark = pytest.mark.slow

VERIFY = "cat out.txt; grep -qx right out.txt"
FIX = {
    "id": "fix",
    "title": "Fix",
    "task": "Write out.txt holding the word right and nothing else.",
    "deliverables": ["out.txt"],
    "verify": [VERIFY],
}


def test_a_failed_verify_resumes_the_same_claude_code_session_which_fixes_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    scenario = pipeline.agent_io / "scenario.json"
    scenario.write_text(json.dumps({"scenario": "success", "files": {"out.txt": "wrong\n"},
                                    "resume_files": {"out.txt": "right\n"}}))  # fmt: skip
    runs_log = pipeline.agent_io / "claude-runs.jsonl"
    pipeline.start_fleet(
        WorkerShape("w1"),
        env={"ANTHROPIC_API_KEY": "sk-ant-test-0000000", "FAKE_CLAUDE_SCENARIO_FILE": str(scenario),
             "FAKE_CLAUDE_RUNS": str(runs_log)},
    )  # fmt: skip
    spec = write_spec(tmp_path / "spec.json", [FIX], agent={"backend": "claude-code"})
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    assert events[-1]["status"] == "done"

    first, second = [json.loads(line) for line in runs_log.read_text().splitlines()]
    assert "--resume" not in first["argv"]
    at = second["argv"].index("--resume")
    assert second["argv"][at + 1] == first["session"]  # the session the first run reported
    assert second["session"] == first["session"]  # one session, continued
    # Told what failed: the verify command and its output, framed as data.
    assert "--resume" not in first["prompt"] and VERIFY in second["prompt"]
    assert "wrong" in second["prompt"] and "untrusted-data" in second["prompt"]
    assert not any(FIX["task"] in arg for run in (first, second) for arg in run["argv"])

    assert pipeline.branch_file("sa/fix", "out.txt") == "right\n"
    store = StateStore(pipeline.state)
    try:
        run = store.latest_run()
        assert run is not None
        attempts = store.attempts(run.id, "fix")
        assert [a.state for a in attempts] == ["failed", "done"]
        assert [a.worker for a in attempts] == ["w1", "w1"]
    finally:
        store.close()
