"""The phase response and the free-form task as typed, versioned messages: parsed in one
place, unknown fields tolerated, another version never guessed at."""

from __future__ import annotations

from typing import Any

import pytest

from control.errors import UsageError
from control.messages import PAYLOAD_VERSION, FreeformTask, PhaseResponse, VerifyResult
from control.state import AttemptRow


def message(**body: Any) -> dict[str, Any]:
    return {"key": "r1/api/1", "id": 7, "state": "failed", "reason": None, "response": body}


def test_a_response_is_read_once_with_everything_the_orchestrator_uses() -> None:
    response = PhaseResponse.from_message(message(
        version=PAYLOAD_VERSION, status="failed", reason="verify failed", worker="w1", slot="s0",
        commit=None, summary="tried", deliverables_missing=["api.txt", 3],
        agent={"backend": "codex", "session_id": "s-1", "cost_usd": 0.25},
        verify=[{"command": "make", "exit_code": 2, "output_tail": "E"},
                {"command": "true", "exit_code": 0}, "junk"],
        from_a_newer_worker={"kept": True},
    ))  # fmt: skip
    assert (response.status, response.reason, response.worker, response.slot) == (
        "failed", "verify failed", "w1", "s0",
    )  # fmt: skip
    assert (response.backend, response.session_id) == ("codex", "s-1")
    assert response.cost_known and response.cost_usd == 0.25
    assert response.missing == ("api.txt",)
    assert response.verify == (VerifyResult("make", 2, "E"), VerifyResult("true", 0))
    assert response.failed_checks == (VerifyResult("make", 2, "E"),)
    assert response.extra["from_a_newer_worker"] == {"kept": True}  # tolerated, kept


def test_an_answer_without_a_version_is_an_older_workers_and_is_read() -> None:
    response = PhaseResponse.from_message(message(status="done", commit="c" * 40))
    assert (response.status, response.commit, response.version) == ("done", "c" * 40, 1)


def test_an_answer_of_another_version_fails_the_attempt_saying_to_upgrade() -> None:
    response = PhaseResponse.from_message(message(version=2, status="done", commit="c" * 40))
    assert response.status == "failed" and response.commit is None
    assert response.reason == (
        "response version 2 is not 1; upgrade the worker and the orchestrator together"
    )


def test_an_attempt_row_gives_its_answer_parsed_or_none() -> None:
    def row(response: Any) -> AttemptRow:
        return AttemptRow(
            run_id="r1", phase_id="api", attempt=1, key="r1/api/1", worker="w1",
            message_id=7, state="failed", created_at=1.0, dispatched_at=None,
            finished_at=None, reason="why", response=response, late_response=None,
            cancel_sent=False,
        )  # fmt: skip

    answered = row({"response": {"status": "failed", "slot": "s1"}}).answer()
    assert answered is not None and (answered.status, answered.slot) == ("failed", "s1")
    assert row(None).answer() is None
    assert row({"state": "dead", "response": None}).answer() is None


def test_a_free_form_task_round_trips_and_tolerates_unknown_fields() -> None:
    task = FreeformTask("Say hello.", agent={"backend": "codex"})
    payload = task.to_payload() | {"from_the_future": 1}
    assert FreeformTask.from_payload(payload) == task


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"type": "phase", "version": 1, "text": "x"}, "payload is not a free-form task"),
        ({"type": "freeform", "version": 9, "text": "x"}, "free-form task version 9 is not 1"),
        ({"type": "freeform", "version": 1, "text": 3}, "needs text"),
        ({"type": "freeform", "version": 1, "text": "x", "agent": "codex"}, "needs text"),
        ({"type": "freeform", "version": 1, "text": "  "}, "needs some text"),
    ],
)
def test_a_bad_free_form_task_is_refused_naming_what(payload: Any, error: str) -> None:
    with pytest.raises(UsageError, match=error):
        FreeformTask.from_payload(payload)
