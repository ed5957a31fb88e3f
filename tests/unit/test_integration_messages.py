"""The final check's task and result as they cross the inbox, and how it is planned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from control.checkset import distinct_checks
from control.errors import UsageError
from control.merge import MergeFailed, asked_checks, integration_task, merge_order
from control.messages import (
    IntegrationCheck,
    IntegrationPhase,
    IntegrationResult,
    IntegrationTask,
    is_integration_payload,
)
from control.spec import load_spec
from tests.integration.conftest import write_spec

C1, C2 = "1" * 40, "2" * 40


def task(**changes: Any) -> IntegrationTask:
    fields: dict[str, Any] = {
        "run_id": "r1",
        "attempt": 1,
        "repo_url": "/srv/origin.git",
        "base_branch": "main",
        "branch": "sa/integration/r1",
        "phases": (IntegrationPhase("a", "sa/a", C1), IntegrationPhase("b", "sa/b", C2)),
        "checks": (IntegrationCheck("make test", ("a", "b")),),
        "push_ref": "refs/superagent/attempts/r1/_integration/1",
    }
    return IntegrationTask(**(fields | changes))


def test_a_task_survives_the_trip_and_has_its_own_key() -> None:
    payload = task().to_payload()
    assert is_integration_payload(payload)
    assert IntegrationTask.from_payload(payload) == task()
    assert task().key == "integration/r1/1"
    newer = payload | {"added_by_a_newer_orchestrator": True}
    assert IntegrationTask.from_payload(newer) == task()  # unknown fields are tolerated


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"branch": ""}, "field 'branch' must be non-empty text"),
        ({"push_ref": None}, "field 'push_ref' must be non-empty text"),
        ({"attempt": 0}, "'attempt' must be a positive integer"),
        ({"phases": []}, "'phases' must be a non-empty list"),
        ({"phases": [{"phase": "a", "branch": "sa/a"}]}, "phases[0] field 'commit'"),
        ({"checks": [{"command": "x", "phases": "a"}]}, "checks[0].phases must be a list"),
        ({"timeout_s": -1}, "'timeout_s' must be a positive number"),
        ({"version": 99}, "version 99 is not 1"),
        ({"type": "phase"}, "payload is not an integration"),
    ],
)
def test_a_bad_task_is_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        IntegrationTask.from_payload(task().to_payload() | change)
    assert message in str(caught.value)


def test_a_result_survives_the_trip_and_a_bad_one_is_refused() -> None:
    result = IntegrationResult(
        status="failed", run_id="r1", attempt=1, branch="b", failed_phases=("a",)
    )
    assert IntegrationResult.from_dict(result.to_dict()) == result
    with pytest.raises(UsageError, match="status 'maybe' is not one of"):
        IntegrationResult.from_dict(result.to_dict() | {"status": "maybe"})
    with pytest.raises(UsageError, match="malformed check"):
        IntegrationResult.from_dict(result.to_dict() | {"checks": [{"command": "x"}]})


def test_each_verify_command_is_asked_once_with_every_phase_that_named_it(tmp_path: Path) -> None:
    phases = [
        {"id": "a", "title": "a", "task": "t", "deliverables": ["a"], "verify": ["pytest", "x"]},
        {
            "id": "b",
            "title": "b",
            "task": "t",
            "deliverables": ["b"],
            "verify": ["pytest ", "y"],
            "depends_on": ["a"],
        },
    ]
    spec = load_spec(write_spec(tmp_path / "spec.json", phases))
    commits = {"a": ("sa/a", C1), "b": ("sa/b", C2)}
    order = merge_order(spec, "r1", commits)
    assert [p.phase for p in order] == ["a", "b"]
    assert distinct_checks(asked_checks(spec, order)) == (
        IntegrationCheck("pytest", ("a", "b")),
        IntegrationCheck("x", ("a",)),
        IntegrationCheck("y", ("b",)),
    )
    built = integration_task(spec, "r1", 2, commits, repo_url="/srv/o.git", verify=False)
    assert built.checks == () and built.key == "integration/r1/2"
    assert built.branch == "sa/integration/r1"
    assert built.push_ref == "refs/superagent/attempts/r1/_integration/2"  # never a phase's
    with pytest.raises(MergeFailed, match="no commit for b"):
        merge_order(spec, "r1", {"a": ("sa/a", C1), "b": ("sa/b", "")})
