"""The merge queue: a phase that breaks the integration only in combination with another
is found by bisecting, sent back to its agent with the failure, and the run finishes.

Real worker processes, a real bare git remote, real SQLite state; every check of a
merged state runs on a worker. See control/merge_queue.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from control.localfleet import WorkerShape
from control.state import StateStore
from tests.integration.conftest import Pipeline, write_spec

pytestmark = pytest.mark.slow

API = {
    "id": "api",
    "title": "API",
    "task": "Write api.txt holding the API version, v2.",
    "deliverables": ["api.txt"],
    "verify": ["grep -qx v2 api.txt"],
}
CLIENT = {
    "id": "client",
    "title": "Client",
    "task": "Write client.txt holding the API version the client speaks.",
    "deliverables": ["client.txt"],
    # passes alone (no api.txt in its checkout); fails once merged with api at v2
    "verify": ["test ! -f api.txt || cmp api.txt client.txt"],
}
NOTES = {
    "id": "notes",
    "title": "Notes",
    "task": "Write notes.txt about the client.",
    "deliverables": ["notes.txt"],
    "verify": ["test -f notes.txt"],
    "depends_on": ["client"],
}
PLAN = {
    "api": {"files": {"api.txt": "v2\n"}},
    "client": {"files": {"client.txt": "v1\n"}, "feedback_files": {"client.txt": "v2\n"}},
    "notes": {"files": {"notes.txt": "notes\n"}},
}


def test_a_phase_breaking_the_integration_only_with_another_is_found_and_redone(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """One slot: no check while phases run, so the whole run is checked at its end and
    the failing batch of three is bisected."""
    pipeline.plan(PLAN)
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", [API, CLIENT, NOTES])
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    runs = pipeline.agent_runs()
    starts = {p: [r for r in runs if r["event"] == "start" and r["phase"] == p] for p in PLAN}
    assert len(starts["api"]) == 1  # never touched again
    first, second = starts["client"]
    assert (first["told"], second["told"]) == (False, True)  # shown the failure
    assert "cmp api.txt client.txt" in second["prompt_tail"]
    assert "merged with api" in second["prompt_tail"]
    assert [r["told"] for r in starts["notes"]] == [False, True]  # rebuilt on the new client
    reopened = [e for e in events if e.get("event") == "phase_reopened"]
    assert [(e["phase"], e["culprit"]) for e in reopened] == [
        ("client", "client"),
        ("notes", "client"),
    ]
    bisects = [e["phases"] for e in events if e.get("event") == "integration_bisect"]
    assert bisects == [["api"], ["api", "client"]]
    verified = [e["phases"] for e in events if e.get("event") == "integration_verified"]
    assert verified == [["api"]]
    merged = events[-1]["merge_branch"]
    assert pipeline.branch_file(merged, "client.txt") == "v2\n"
    assert pipeline.branch_file(merged, "api.txt") == "v2\n"
    assert pipeline.branch_file(merged, "notes.txt") == "notes\n"
    store = StateStore(pipeline.state)
    try:
        run = store.latest_run()
        assert run is not None and run.status == "done"
        assert run.merge_commit == git(pipeline.remote, "rev-parse", merged)
        rows = store.integrations(run.id)
        # the full check failed; {api} passed; {api, client} failed; the last holds all
        assert [r.state for r in rows] == ["failed", "done", "failed", "done"]
        last = rows[-1].task
        assert [p["phase"] for p in last["phases"]] == ["api", "client", "notes"]
        assert len(last["checks"]) == 3  # the final check is the queue's last state
        assert [(r.phase_id, r.culprit) for r in store.reopens(run.id)] == [
            ("client", "client"),
            ("notes", "client"),
        ]
        feedback = store.reopens(run.id, "client")[0].feedback
        assert feedback["verify"][0]["command"] == CLIENT["verify"][0]
        assert "differ" in feedback["verify"][0]["output_tail"]  # cmp's own words
        phases = store.phases(run.id)
        assert {p: r.state for p, r in phases.items()} == dict.fromkeys(PLAN, "done")
        assert phases["client"].failures == 0  # a reopen is not a failed attempt
    finally:
        store.close()


def test_accepted_phases_are_merged_and_checked_while_the_others_run(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Two slots: api is checked on the spare slot while client still works; client,
    merged onto that verified state, breaks it, and is sent back during the run."""
    # client works long enough for api's check to be verified first, however loaded
    pipeline.plan({**PLAN, "client": {**PLAN["client"], "delay_s": 8}})
    pipeline.start_fleet(WorkerShape("w1", slots=2))
    spec = write_spec(tmp_path / "spec.json", [API, CLIENT, NOTES])
    code, events, stderr = pipeline.dispatch(spec)
    assert code == 0, stderr
    kinds = [e.get("event") for e in events]
    client_done = next(
        i for i, e in enumerate(events) if e.get("event") == "phase_done" and e["phase"] == "client"
    )
    verified = [
        i for i, e in enumerate(events)
        if e.get("event") == "integration_verified" and e["phases"] == ["api"]
    ]  # fmt: skip
    assert verified and verified[0] < client_done  # merged as it was accepted
    reopened = [(e["phase"], e["culprit"]) for e in events if e.get("event") == "phase_reopened"]
    assert reopened == [("client", "client"), ("notes", "client")]
    assert kinds.index("phase_reopened") < kinds.index("merged")
    starts = [r for r in pipeline.agent_runs() if r["event"] == "start" and r["phase"] == "client"]
    assert [r["told"] for r in starts] == [False, True]
    assert "cmp api.txt client.txt" in starts[1]["prompt_tail"]
    store = StateStore(pipeline.state)
    try:
        run = store.latest_run()
        assert run is not None and run.status == "done"
        rows = store.integrations(run.id)
        assert [p["phase"] for p in rows[0].task["phases"]] == ["api"]
        assert rows[0].state == "done"
        assert [p["phase"] for p in rows[-1].task["phases"]] == ["api", "client", "notes"]
        assert rows[-1].state == "done" and run.merge_commit is not None
    finally:
        store.close()
    merged = events[-1]["merge_branch"]
    assert pipeline.branch_file(merged, "client.txt") == "v2\n"


def test_merge_queue_false_reports_the_failing_integration_for_a_person(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan(PLAN)
    pipeline.start_fleet(WorkerShape("w1", slots=2))
    spec = write_spec(tmp_path / "spec.json", [API, CLIENT])  # nothing checked while they run
    document = json.loads(spec.read_text())
    spec.write_text(json.dumps({**document, "merge_queue": False}))
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1
    failed = [e for e in events if e.get("event") == "merge_failed"]
    assert len(failed) == 1 and "client" in failed[0]["reason"]
    assert not [e for e in events if e.get("event") == "phase_reopened"]
    assert len([r for r in pipeline.agent_runs() if r["event"] == "start"]) == 2


def git(remote: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(remote), *args], capture_output=True, text=True, check=True
    ).stdout.strip()
