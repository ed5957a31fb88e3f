"""The final check's driver step by step, with the test acting as the workers.

Real inboxes, a real state database, a real remote; the worker side is the real
executor (`control.worker.integrate`) called on a claimed message. The clock is the
test's, so a worker going silent is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control.errors import UnavailableError
from control.integration import FinalCheck
from control.merge import MergeFailed
from control.merge_queue import Reopened
from control.messages import IntegrationResult, IntegrationTask
from control.queue import Claimed
from control.worker.config import WorkerConfig
from control.worker.contract import RunControl
from control.worker.integrate import run_integration
from tests.integration.test_orchestrator import ONE_PHASE, Rig, claim


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    built = Rig(tmp_path, ONE_PHASE)
    built.beat("w1", "w2")
    built.orchestrator.tick()
    (attempt,) = built.store.attempts(built.run_id, "api")
    built.answer_done(attempt.worker)
    built.orchestrator.tick()
    assert built.store.phases(built.run_id)["api"].state == "done"
    yield built
    built.close()


def work(rig: Rig, name: str, claimed: Claimed) -> dict:
    """Do the final check as worker `name` does, and answer through its inbox."""
    config = WorkerConfig(
        worker_id=name,
        queue_db=rig.root / f"{name}.db",
        work_dir=rig.root / f"{name}-work",
        logs_dir=rig.root / f"{name}-logs",
        git_author_name=f"worker {name}",
    )
    task = IntegrationTask.from_payload(claimed.payload)
    outcome = run_integration(config, task, claimed, RunControl(), "slot0")
    queue = rig.queues[name]
    if outcome.status == "done":
        queue.complete(claimed.id, claimed.fence, outcome.response)
    else:
        queue.fail(claimed.id, claimed.fence, outcome.reason or "", outcome.response)
    return outcome.response


def test_a_worker_lost_during_the_final_check_has_it_done_by_another(rig: Rig) -> None:
    check = FinalCheck(rig.orchestrator)
    assert check.step() is None
    (first,) = rig.store.integrations(rig.run_id)
    lost = first.worker
    other = "w2" if lost == "w1" else "w1"
    stale = claim(rig, lost)  # it starts, then goes silent
    rig.clock.advance(31)
    rig.beat(other)
    assert check.step() is None
    rows = rig.store.integrations(rig.run_id)
    assert [(r.worker, r.state) for r in rows] == [(lost, "abandoned"), (other, "dispatched")]
    dropped = next(m for m in rig.queues[lost].messages() if m.key == first.key)
    assert dropped.cancel_requested  # its inbox is asked to stop it
    answer = work(rig, other, claim(rig, other))
    assert answer["status"] == "done"
    rig.beat(other)
    result = check.step()
    assert result is not None and result.worker == other
    assert rig.store.run(rig.run_id).merge_commit == result.commit == answer["commit"]
    assert rig.orchestrator.git.remote_commit(result.branch) == result.commit  # promoted
    assert rig.store.integrations(rig.run_id)[-1].state == "done"
    assert ("integration_abandoned", {"worker": lost, "attempt": 1}) in rig.events
    # The lost worker wakes up and finishes its own check: it pushes only to its own ref,
    # the accepted branch stays where the orchestrator put it.
    late = work(rig, lost, stale)
    assert late["status"] == "done" and late["commit"] != result.commit
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert rig.orchestrator.git.remote_commit(result.branch) == result.commit
    assert (
        rig.store.integrations(rig.run_id)[0].late_response["response"]["commit"] == late["commit"]
    )
    assert rig.queues[lost].responses() == []  # recorded, and acknowledged


def test_a_done_branch_moved_before_the_check_is_put_back_and_the_check_merges_it(
    rig: Rig,
) -> None:
    """The accepted commit, not whatever the branch holds now: a branch moved after its
    phase was accepted is put back before the check is sent, and the worker's merge
    (the real executor) finds the accepted commit on it."""
    accepted = rig.store.phases(rig.run_id)["api"].commit_sha
    assert accepted is not None
    rig.push("sa/api", {"api.txt": "overwritten\n"})
    check = FinalCheck(rig.orchestrator)
    assert check.step() is None
    assert rig.orchestrator.git.remote_commit("sa/api") == accepted
    (row,) = rig.store.integrations(rig.run_id)
    answer = work(rig, row.worker, claim(rig, row.worker))
    assert answer["status"] == "done", answer["reason"]
    result = check.step()
    assert result is not None and result.merged[0]["commit"] == accepted


def test_a_restarted_orchestrator_waits_for_the_check_it_sent_and_sends_nothing_new(
    rig: Rig,
) -> None:
    FinalCheck(rig.orchestrator).step()
    (sent,) = rig.store.integrations(rig.run_id)
    rig.orchestrator.transports.close()
    rig.orchestrator = rig.new_orchestrator()  # kill -9, then the same command again
    check = FinalCheck(rig.orchestrator)
    rig.beat("w1", "w2")
    assert check.step() is None
    assert [r.key for r in rig.store.integrations(rig.run_id)] == [sent.key]
    work(rig, sent.worker, claim(rig, sent.worker))
    result = check.step()
    assert result is not None
    assert sum(len(q.messages()) for q in rig.queues.values()) == 2  # the phase and one check


def test_a_done_report_the_remote_does_not_show_is_not_believed(rig: Rig) -> None:
    check = FinalCheck(rig.orchestrator, max_attempts=1)
    check.step()
    (sent,) = rig.store.integrations(rig.run_id)
    claimed = claim(rig, sent.worker)
    task = IntegrationTask.from_payload(claimed.payload)
    forged = IntegrationResult(
        status="done", run_id=rig.run_id, attempt=1, branch=task.branch, commit="a" * 40
    )
    rig.queues[sent.worker].complete(claimed.id, claimed.fence, forged.to_dict())
    rig.beat("w1", "w2")
    with pytest.raises(MergeFailed, match="but the remote has nothing"):
        check.step()
    assert rig.store.run(rig.run_id).merge_commit is None
    assert rig.store.integrations(rig.run_id)[0].state == "failed"


def test_no_live_worker_is_a_clear_error_when_asked_not_to_wait(rig: Rig) -> None:
    rig.clock.advance(120)  # both workers silent
    rig.orchestrator.tick()
    with pytest.raises(UnavailableError, match="no worker is up to run the final check"):
        FinalCheck(rig.orchestrator).step(no_worker_is_fatal=True)
    assert rig.store.integrations(rig.run_id) == []


PAIR = [
    {
        "id": "a",
        "title": "A",
        "task": "Write a.txt.",
        "deliverables": ["a.txt"],
        "verify": ["test -f a.txt"],
    },
    # passes alone; fails once merged beside a
    {
        "id": "b",
        "title": "B",
        "task": "Write b.txt.",
        "deliverables": ["b.txt"],
        "verify": ["test ! -f a.txt"],
    },
]


def test_a_killed_orchestrator_resumes_the_merge_queue_where_it_was(tmp_path: Path) -> None:
    """Each step by a fresh orchestrator (a kill -9 between them): the bisection goes on
    from the checks the state database holds, and the culprit is reopened once."""
    rig = Rig(tmp_path, PAIR)
    try:
        rig.beat("w1", "w2")
        rig.orchestrator.tick()
        for attempt in rig.store.attempts(rig.run_id):
            job = claim(rig, attempt.worker)
            commit = rig.push(job.payload["push_ref"], {f"{attempt.phase_id}.txt": "x\n"})
            rig.queues[attempt.worker].complete(
                job.id, job.fence, {"status": "done", "commit": commit}
            )
        rig.orchestrator.tick()

        def restarted() -> FinalCheck:
            rig.orchestrator.transports.close()
            rig.orchestrator = rig.new_orchestrator()
            rig.beat("w1", "w2")
            return FinalCheck(rig.orchestrator)

        def answer() -> None:
            (sent,) = [r for r in rig.store.integrations(rig.run_id) if r.state == "dispatched"]
            work(rig, sent.worker, claim(rig, sent.worker))

        assert restarted().step() is None
        answer()  # the whole run fails b's check
        assert restarted().step() is None  # the answer judged, then the bisection's check
        rows = rig.store.integrations(rig.run_id)
        assert [([p["phase"] for p in r.task["phases"]], r.state) for r in rows] == [
            (["a", "b"], "failed"),
            (["a"], "dispatched"),
        ]
        answer()  # a alone passes: b is the culprit
        reopened = restarted().step()
        assert isinstance(reopened, Reopened) and reopened.phases == ("b",)
        assert rig.store.phases(rig.run_id)["b"].state == "waiting"
        assert restarted().step() is None  # nothing more to check, nothing reopened twice
        assert len(rig.store.reopens(rig.run_id)) == 1
        assert len(rig.store.integrations(rig.run_id)) == 2
        # b's next attempt is shown what failed beside a
        attempt = next(a for a in rig.store.attempts(rig.run_id, "b") if a.attempt == 2)
        job = claim(rig, attempt.worker)
        assert job.payload["feedback"]["verify"][0]["command"] == "test ! -f a.txt"
        assert "merged with a" in job.payload["feedback"]["reason"]
    finally:
        rig.close()
