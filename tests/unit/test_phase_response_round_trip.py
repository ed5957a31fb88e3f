"""One wire format for the phase response: what the worker builds (`PhaseResponse`, sent as
its `to_dict()`) is what the orchestrator parses back (`PhaseResponse.from_message`), for
every status, through a real inbox: the worker's own code ends the attempt, the daemon's
rule stores it, and the orchestrator reads the message as `rpc poll` hands it over."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from control.messages import FreeformTask, PhaseResponse, PhaseTask, VerifyResult
from control.queue import Claimed, Queue
from control.worker.config import WorkerConfig
from control.worker.contract import CANCELLED, MessageOutcome, RunControl
from control.worker.freeform import run_freeform
from control.worker.phase import PhaseExecutor, _Attempt

TASK = PhaseTask(
    run_id="r1", phase_id="api", attempt=2, title="api", task="Write api.txt.",
    branch="sa/api", repo_url="/nowhere.git", base_branch="main", deliverables=("api.txt",),
    push_ref="refs/superagent/attempts/r1/api/2",
)  # fmt: skip
AGENT = {"status": "ok", "backend": "codex", "session_id": "s-9", "cost_usd": 0.42,
         "usage": {"input_tokens": 10}, "num_turns": 3}  # fmt: skip
CHECKS = (VerifyResult("make lint", 0, "clean", False, 1.25),
          VerifyResult("make test", 2, "1 failed", True, 30.0))  # fmt: skip

STATUSES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("done", None, {
        "commit": "c" * 40, "base_commit": "b" * 40, "agent": AGENT, "summary": "wrote it",
        "merged": ({"phase": "schema", "branch": "sa/schema", "commit": "d" * 40},),
        "verify": CHECKS[:1], "resumed_from": {"ref": "refs/superagent/wip/r1/api/1",
                                               "commit": "e" * 40},
    }),
    ("failed", "verify command failed (exit 2, timed out): make test", {
        "agent": AGENT, "verify": CHECKS, "missing": ("api.txt",),
        "checkpoint": {"ref": "refs/superagent/wip/r1/api/2", "commit": "f" * 40, "count": 1,
                       "refused": None},
        "resume_errors": ("refs/superagent/wip/r1/api/1: gone",), "session_kept": "not kept",
        "secrets_found": ("config.py",),
    }),
    ("conflict", "the agent left conflict markers in api.txt", {
        "conflict": {"phase": "schema", "branch": "sa/schema", "commit": "d" * 40,
                     "conflicts": ["api.txt"]},
    }),
    ("rate_limited", "usage limit reached", {"agent": AGENT, "rate_limit_reset": 1.9e9}),
    ("cancelled", CANCELLED, {"agent": AGENT}),
]  # fmt: skip


def _config(tmp_path: Path) -> WorkerConfig:
    return WorkerConfig(worker_id="w1", queue_db=tmp_path / "inbox.db",
                        work_dir=tmp_path / "work", logs_dir=tmp_path / "logs")  # fmt: skip


def _claim(queue: Queue, payload: dict[str, Any], key: str) -> Claimed:
    queue.enqueue(payload, key=key)
    claimed = queue.claim("w1", 60)
    assert claimed is not None
    return claimed


def _stored_and_parsed(queue: Queue, claimed: Claimed, outcome: MessageOutcome) -> PhaseResponse:
    """Stored as the daemon stores an outcome, read back as the orchestrator reads it."""
    if outcome.status == "done":
        queue.complete(claimed.id, claimed.fence, outcome.response)
    else:
        queue.fail(claimed.id, claimed.fence, outcome.reason or outcome.status, outcome.response)
    (message,) = queue.responses()
    return PhaseResponse.from_message(message.to_dict())


def _enveloped(built: PhaseResponse, claimed: Claimed, state: str) -> PhaseResponse:
    return replace(built, key=claimed.key or "", message_id=claimed.id, state=state)


@pytest.mark.parametrize(("status", "reason", "fields"), STATUSES, ids=[s[0] for s in STATUSES])
def test_what_the_worker_builds_for_an_attempt_is_what_the_orchestrator_parses(
    tmp_path: Path, status: str, reason: str | None, fields: dict[str, Any]
) -> None:
    queue = Queue(tmp_path / "inbox.db")
    claimed = _claim(queue, TASK.to_payload(), TASK.key)
    control = RunControl()
    if status == "cancelled":
        control.stop(CANCELLED)
    attempt = _Attempt(_config(tmp_path), TASK, claimed, control, "slot0", None)
    outcome = attempt._end(status, reason, **fields)
    built = attempt.response
    assert (built.status, built.reason, built.run_id, built.phase, built.attempt) == (
        status, reason, "r1", "api", 2,
    )  # fmt: skip
    assert set(built.durations) == {"total"}
    parsed = _stored_and_parsed(queue, claimed, outcome)
    assert parsed == _enveloped(built, claimed, "done" if status == "done" else "failed")
    assert parsed.extra == {}  # every field the worker writes is one the type names
    assert (parsed.cost_usd, parsed.cost_known, parsed.backend, parsed.session_id) == (
        (0.42, True, "codex", "s-9") if "agent" in fields else (0.0, False, "", None)
    )


def test_an_attempt_given_a_field_the_response_does_not_have_is_a_type_error(
    tmp_path: Path,
) -> None:
    queue = Queue(tmp_path / "inbox.db")
    claimed = _claim(queue, TASK.to_payload(), TASK.key)
    attempt = _Attempt(_config(tmp_path), TASK, claimed, RunControl(), "slot0", None)
    with pytest.raises(TypeError, match="deliverables_missing"):
        attempt._end("failed", "missing", deliverables_missing=["api.txt"])


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"type": "phase", "version": 1}, "bad phase task: "),
        ({"type": "integration", "version": 1}, "bad integration task: "),
        ({"type": "freeform", "version": 1, "text": " "}, "a free-form task needs some text"),
        ({"type": "poem"}, "not a task this worker knows"),
    ],
)
def test_a_task_the_worker_refuses_is_answered_through_the_type(
    tmp_path: Path, payload: dict[str, Any], reason: str
) -> None:
    queue = Queue(tmp_path / "inbox.db")
    claimed = _claim(queue, payload, "k/1")
    config = replace(_config(tmp_path), trusted_host=True)
    outcome = PhaseExecutor(config)(claimed, RunControl(), "slot0")
    assert outcome.status == "failed" and (outcome.reason or "").startswith(reason)
    parsed = _stored_and_parsed(queue, claimed, outcome)
    built = PhaseResponse(status="failed", reason=outcome.reason, worker="w1")
    assert parsed == _enveloped(built, claimed, "failed")
    assert outcome.response == built.to_dict() and outcome.response["version"] == 1


@pytest.mark.parametrize(("code", "status"), [(0, "done"), (3, "failed")])
def test_a_free_form_answer_is_built_and_parsed_with_the_same_type(
    tmp_path: Path, code: int, status: str
) -> None:
    queue = Queue(tmp_path / "inbox.db")
    agent = {
        "backend": "command",
        "command": [sys.executable, "-c", f"print('hello'); raise SystemExit({code})"],
    }
    claimed = _claim(queue, FreeformTask("Say hello.", agent=agent).to_payload(), "freeform/1")
    outcome = run_freeform(_config(tmp_path), claimed, RunControl(), None)
    assert outcome.status == status
    parsed = _stored_and_parsed(queue, claimed, outcome)
    assert (parsed.status, parsed.worker, parsed.backend) == (status, "w1", "command")
    assert parsed.directory and Path(parsed.directory).is_dir()
    assert parsed.log and Path(parsed.log).is_file()
    assert parsed.summary.strip() == "hello"
    assert parsed.reason == (None if code == 0 else "the agent exited 3: hello")
    assert parsed.extra == {}
    again = {"key": parsed.key, "id": parsed.message_id, "state": parsed.state,
             "reason": parsed.reason, "response": parsed.to_dict()}  # fmt: skip
    assert PhaseResponse.from_message(again) == parsed  # parsed, written and parsed again
