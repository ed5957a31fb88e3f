"""A run always finishes: the holes of issue 9, each closed, each with its scenario.

Real inboxes, a real state database and a real git remote, driven tick by tick on
the test's clock (the rig of test_orchestrator.py); the test acts as the workers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from control.errors import ConflictError
from control.inventory import Worker
from control.operations import cancel, fleet_health
from control.queue import Queue
from control.state import StateStore
from control.transport import Transports
from control.transport.base import TransportError
from control.transport.local import LocalTransport
from tests.conftest import Clock
from tests.integration import test_orchestrator
from tests.integration.test_orchestrator import ONE_PHASE, Rig, attempts, claim

rig = test_orchestrator.rig  # the fixture: a Rig over ONE_PHASE


def write_off_first(rig: Rig, *, hide: bool = False) -> tuple[str, str, Path | None]:
    """Dispatch `api`, let its worker go silent past the heartbeat timeout: the attempt
    is written off and the phase goes to the other worker. With `hide`, the silent
    worker's inbox is unreachable too (moved away; returned so the test can put it
    back). Returns (slow, other, where the inbox was moved)."""
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    slow = rig.store.attempts(rig.run_id, "api")[0].worker
    other = "w2" if slow == "w1" else "w1"
    hidden = None
    if hide:
        rig.orchestrator.transports.close()
        db = inbox(rig, slow)
        hidden = db.with_name("away.db")
        db.rename(hidden)
    rig.clock.advance(31)
    rig.beat(other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(slow, "abandoned"), (other, "dispatched")]
    return slow, other, hidden


def inbox(rig: Rig, name: str) -> Path:
    return Path(next(w for w in rig.workers if w.name == name).vars["superagent_queue_db"])


# -- 1. a written-off attempt can never overwrite an accepted branch -------------------


def test_a_written_off_attempt_pushing_late_cannot_move_the_accepted_branch(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    slow = rig.store.attempts(rig.run_id, "api")[0].worker
    stale = claim(rig, slow)  # the slow worker holds it, then goes quiet
    rig.clock.advance(31)
    other = "w2" if slow == "w1" else "w1"
    rig.beat(other)
    rig.orchestrator.tick()
    job = claim(rig, other)
    accepted = rig.push(job.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[other].complete(job.id, job.fence, {"status": "done", "commit": accepted})
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.orchestrator.git.remote_commit("sa/api") == accepted
    # The written-off attempt runs anyway and pushes where its task says.
    late = rig.push(stale.payload["push_ref"], {"api.txt": "ready\n", "stale.txt": "x\n"})
    assert late != accepted
    assert stale.payload["push_ref"] != job.payload["push_ref"]
    assert rig.orchestrator.git.remote_commit("sa/api") == accepted


TWO_PHASES = [
    ONE_PHASE[0],
    {
        "id": "web",
        "title": "Web",
        "task": "Write web.txt holding the word up, next to api.txt.",
        "deliverables": ["web.txt"],
        "verify": ["grep -qx up web.txt"],
        "depends_on": ["api"],
    },
]


def test_an_accepted_branch_moved_anyway_is_repaired_before_a_phase_builds_on_it(
    tmp_path: Path,
) -> None:
    """Something moves a done phase's branch (a worker of an older superagent, a
    person): the phase built on it is sent only once the branch is back at the
    accepted commit, so its worker's checkout does not fail on a branch that no
    longer holds what it was told to merge."""
    rig = Rig(tmp_path, TWO_PHASES)
    try:
        rig.beat("w1", "w2")
        rig.orchestrator.tick()
        (first,) = rig.store.attempts(rig.run_id, "api")
        accepted = rig.answer_done(first.worker)
        rig.beat("w1", "w2")
        rig.orchestrator.tick()  # api accepted, web dispatched
        (web,) = rig.store.attempts(rig.run_id, "web")
        rig.push("sa/api", {"api.txt": "overwritten\n"})  # then the branch moves
        other = "w2" if web.worker == "w1" else "w1"
        rig.clock.advance(31)  # and web's worker is lost: web is sent again, elsewhere
        rig.beat(other)
        rig.orchestrator.tick()
        assert [(a.worker, a.state) for a in rig.store.attempts(rig.run_id, "web")] == [
            (web.worker, "abandoned"),
            (other, "dispatched"),
        ]
        assert rig.orchestrator.git.remote_commit("sa/api") == accepted
        assert ("branch_repaired", {"phase": "api", "commit": accepted}) in rig.events
        task = claim(rig, other)
        assert task.payload["prerequisites"][0]["commit"] == accepted
    finally:
        rig.close()


def test_cancels_owed_are_recorded_first_and_delivered_until_confirmed(rig: Rig) -> None:
    slow, other, hidden = write_off_first(rig, hide=True)
    assert hidden is not None
    stale = rig.store.attempts(rig.run_id, "api")[0]
    assert stale.cancel_owed and not stale.cancel_sent  # owed, not yet delivered
    rig.orchestrator.transports.close()
    rig.orchestrator = rig.new_orchestrator()  # the orchestrator restarts meanwhile
    rig.beat(other)
    rig.orchestrator.tick()
    assert not rig.store.attempts(rig.run_id, "api")[0].cancel_sent
    rig.orchestrator.transports.close()
    hidden.rename(inbox(rig, slow))
    rig.beat(slow, other)
    rig.orchestrator.tick()
    (message,) = rig.queues[slow].messages()
    assert message.state == "cancelled"
    assert rig.store.attempts(rig.run_id, "api")[0].cancel_sent


class FailingCancels(LocalTransport):
    """The local transport whose cancels fail while `failing` is set, though the same
    worker answered the poll just before: a connection dropped between the two calls."""

    failing = True

    def cancel(self, worker: Worker, key: str) -> str:
        if self.failing:
            raise TransportError(f"{worker.name}: connection reset")
        return super().cancel(worker, key)


def test_a_cancel_whose_call_fails_stays_owed_and_a_later_tick_delivers_it(rig: Rig) -> None:
    transport = FailingCancels(clock=rig.clock)
    rig.orchestrator.transports = Transports({"local": lambda: transport})
    slow, other, _ = write_off_first(rig)  # the slow worker's inbox answers polls
    stale = rig.store.attempts(rig.run_id, "api")[0]
    assert stale.cancel_owed and not stale.cancel_sent  # the call failed: still owed
    (message,) = rig.queues[slow].messages()
    assert message.state == "pending"
    transport.failing = False
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.store.attempts(rig.run_id, "api")[0].cancel_sent
    (message,) = rig.queues[slow].messages()
    assert message.state == "cancelled"


@pytest.mark.parametrize("by", ["a later run", "control health"])
def test_cancels_owed_are_delivered_after_the_run_has_ended(rig: Rig, by: str) -> None:
    slow, other, hidden = write_off_first(rig, hide=True)
    assert hidden is not None
    rig.answer_done(other)
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.orchestrator.outcome() is not None  # every phase done: the run is over
    rig.store.finish_run(rig.run_id, "done")
    # The slow worker comes back only now; a later command reaching it delivers.
    rig.orchestrator.transports.close()
    hidden.rename(inbox(rig, slow))
    rig.beat(slow, other)
    if by == "a later run":
        later = rig.store.create_run(
            "later-spec", "hash2", rig.spec.to_dict(), [(p.id, p.branch) for p in rig.spec.phases]
        )
        rig.orchestrator = rig.new_orchestrator()
        rig.orchestrator.attach(later)
        rig.orchestrator.tick()
    else:
        transports = Transports()
        try:
            fleet_health(rig.workers, transports, rig.store.path)
        finally:
            transports.close()
    (message,) = [m for m in rig.queues[slow].messages() if m.key.startswith(rig.run_id)]
    assert message.state == "cancelled"
    assert rig.store.attempts(rig.run_id, "api")[0].cancel_sent


# -- 2. several runs share one state database and one fleet ----------------------------


def test_a_run_never_consumes_another_open_runs_response(rig: Rig) -> None:
    other_run = rig.store.create_run(
        "other-spec", "hash2", rig.spec.to_dict(), [(p.id, p.branch) for p in rig.spec.phases]
    )
    second = rig.new_orchestrator()
    second.attach(other_run)
    rig.beat("w1", "w2")
    second.tick()  # run B dispatches its phase
    (b_attempt,) = rig.store.attempts(other_run, "api")
    job = claim(rig, b_attempt.worker)
    commit = rig.push(job.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[b_attempt.worker].complete(job.id, job.fence, {"status": "done", "commit": commit})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()  # run A polls the same inbox first
    assert [m.id for m in rig.queues[b_attempt.worker].responses()] == [job.id]
    assert rig.store.attempts(other_run, "api")[0].late_response is None
    second.tick()
    assert rig.store.phases(other_run)["api"].state == "done"


# -- 3. no attempt stays in flight forever -------------------------------------------------


def test_an_attempt_its_recreated_inbox_does_not_know_is_redispatched_at_once(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    db = Path(next(w for w in rig.workers if w.name == holder).vars["superagent_queue_db"])
    rig.orchestrator.transports.close()
    rig.queues[holder].close()
    for path in db.parent.glob(db.name + "*"):
        path.unlink()
    rig.queues[holder] = Queue(db, clock=rig.clock)  # a fresh inbox, the worker beating on
    rig.orchestrator = rig.new_orchestrator()
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    rows = rig.store.attempts(rig.run_id, "api")
    assert rows[0].state == "abandoned" and "does not know it" in (rows[0].reason or "")
    assert rows[1].state == "dispatched"
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.failures, phase.losses) == (0, 1)


def test_a_worker_removed_from_the_inventory_has_its_attempt_reassigned(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    rig.orchestrator.transports.close()
    rig.workers = [w for w in rig.workers if w.name != holder]
    rig.orchestrator = rig.new_orchestrator()  # resumed with the host gone
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    rows = rig.store.attempts(rig.run_id, "api")
    assert rows[0].state == "abandoned" and "no longer in the inventory" in (rows[0].reason or "")
    assert rows[1].state == "dispatched" and rows[1].worker != holder


def test_an_attempt_past_its_timeout_and_grace_is_written_off(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    claim(rig, holder)
    timeout = rig.spec.phase("api").timeout_minutes * 60
    rig.clock.advance(timeout + rig.orchestrator.settings.overdue_grace_s + 1)
    rig.beat("w1", "w2")  # the worker still beats, but never answers
    rig.orchestrator.tick()
    rows = rig.store.attempts(rig.run_id, "api")
    assert rows[0].state == "abandoned" and "timeout" in (rows[0].reason or "")
    assert rows[1].state == "dispatched"


def test_a_poll_reaches_this_runs_responses_past_a_window_full_of_others(rig: Rig) -> None:
    for queue in rig.queues.values():
        for i in range(250):  # an operator's answered tasks, never acknowledged, older
            queue.enqueue({"n": i}, key=f"operator/{i}")
            other = queue.claim("op", 60)
            assert other is not None
            queue.complete(other.id, other.fence, {"status": "done"})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    queue = rig.queues[holder]
    job = claim(rig, holder)
    rig.clock.advance(1)  # answered after all of them: last in the inbox's own order
    commit = rig.push(job.payload["push_ref"], {"api.txt": "ready\n"})
    queue.complete(job.id, job.fence, {"status": "done", "commit": commit})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "done"


# -- 4. a network blip is not a machine loss ----------------------------------------------


def test_a_blip_is_not_a_machine_loss_and_a_real_loss_does_not_count(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    other = "w2" if holder == "w1" else "w1"
    db = Path(next(w for w in rig.workers if w.name == holder).vars["superagent_queue_db"])
    rig.orchestrator.transports.close()
    hidden = db.with_name("blip.db")
    db.rename(hidden)
    for _ in range(5):  # five failed polls within the heartbeat timeout
        rig.clock.advance(2)
        rig.beat(other)
        rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "dispatched")]
    assert rig.store.workers()[holder].status == "up"
    assert (
        "worker_unreachable",
        {"worker": holder, "reason": rig.store.workers()[holder].reason},
    ) in rig.events
    # Past the heartbeat timeout with no sign of life, it is a loss: reassigned at
    # once, without a backoff, and not one of the phase's own attempts.
    rig.clock.advance(31)
    rig.beat(other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.failures, phase.losses) == (0, 1)
    hidden.rename(db)


def test_a_lease_lost_on_the_worker_is_a_machine_loss(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    for _ in range(2):  # the worker is killed twice mid-run: the inbox gives up
        claim(rig, holder)
        rig.clock.advance(61)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.failures, phase.losses) == (0, 1)
    assert phase.state in ("dispatched", "sending")


# -- 5. one bad call never stops the run ---------------------------------------------------


class FailingAcks(LocalTransport):
    """The local transport whose acknowledgements fail while `failing` is set: a
    dropped connection at the worst moment."""

    failing = True

    def ack(self, worker: Worker, ids: Sequence[int]) -> int:
        if self.failing:
            raise TransportError(f"{worker.name}: connection reset")
        return super().ack(worker, ids)


def test_a_failed_acknowledgement_is_retried_and_the_tick_goes_on(rig: Rig) -> None:
    transport = FailingAcks(clock=rig.clock)
    rig.orchestrator.transports = Transports({"local": lambda: transport})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    job = claim(rig, holder)
    commit = rig.push(job.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[holder].complete(job.id, job.fence, {"status": "done", "commit": commit})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()  # stored, the acknowledgement fails: no exception
    assert rig.store.phases(rig.run_id)["api"].state == "done"
    assert [m.id for m in rig.queues[holder].responses()] == [job.id]
    transport.failing = False
    rig.orchestrator.tick()
    assert rig.queues[holder].responses() == []
    assert rig.store.attempts(rig.run_id, "api")[0].late_response is None


# -- 6. the operator's word sticks ----------------------------------------------------------


class CancelsSeeing(LocalTransport):
    """Notes what the state database holds of an attempt when its cancel goes out, and
    fails the call: the worker cannot be reached just then."""

    def __init__(self, *, clock: Clock, store: StateStore) -> None:
        super().__init__(clock=clock)
        self.store = store
        self.seen: list[tuple[str, bool]] = []

    def cancel(self, worker: Worker, key: str) -> str:
        row = self.store.attempt_by_key(key)
        assert row is not None
        self.seen.append((row.state, row.cancel_owed))
        raise TransportError(f"{worker.name}: unreachable")


def test_a_cancelled_phase_whose_worker_goes_quiet_stays_cancelled(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    transport = CancelsSeeing(clock=rig.clock, store=rig.store)
    fleet = {w.name: w for w in rig.workers}
    run = rig.store.run(rig.run_id)
    done = cancel(rig.store, Transports({"local": lambda: transport}), fleet, run, ["api"])
    assert transport.seen == [("cancelled", True)]  # recorded, and owed, before it is sent
    assert done.unstopped == [f"{rig.run_id}/api/1"]
    rig.clock.advance(31)  # the worker goes quiet
    other = "w2" if holder == "w1" else "w1"
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "cancelled"
    assert attempts(rig) == [(holder, "cancelled")]
    rig.beat(holder, other)
    rig.orchestrator.tick()  # back: the owed cancel reaches it
    (message,) = rig.queues[holder].messages()
    assert message.state == "cancelled"


# -- 7. nothing acknowledged is lost ----------------------------------------------------------


def test_a_freeform_answer_this_database_did_not_record_is_left_in_the_inbox(rig: Rig) -> None:
    queue = rig.queues["w1"]
    queue.enqueue({"type": "freeform", "version": 1, "text": "hi"}, key="freeform/elsewhere")
    job = queue.claim("w1", 60)
    assert job is not None
    queue.complete(job.id, job.fence, {"status": "done", "summary": "hello"})
    rig.store.record_freeform("freeform/ours", "w1")
    queue.enqueue({"type": "freeform", "version": 1, "text": "yo"}, key="freeform/ours")
    ours = queue.claim("w1", 60)
    assert ours is not None
    queue.complete(ours.id, ours.fence, {"status": "done", "summary": "answered"})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert [m.key for m in queue.responses()] == ["freeform/elsewhere"]
    (answer,) = rig.store.answers()
    assert answer["key"] == "freeform/ours"
    assert answer["response"]["response"]["summary"] == "answered"


# -- 8. one driver per run ----------------------------------------------------------------------


def test_a_second_driver_of_a_run_is_refused_and_a_dead_ones_lease_taken_over(
    rig: Rig,
) -> None:
    live = {"host": "elsewhere", "pid": 4242, "token": "a"}
    rig.store.acquire_driver(rig.run_id, live, 30)
    with pytest.raises(ConflictError, match="driven by process 4242 on elsewhere"):
        rig.store.acquire_driver(rig.run_id, {"host": "here", "pid": 1, "token": "b"}, 30)
    assert rig.store.live_driver(rig.store.run(rig.run_id)) == live
    rig.clock.advance(31)  # its lease runs out: nobody drives the run
    assert rig.store.live_driver(rig.store.run(rig.run_id)) is None
    # A killed driver on this host (its process gone) is taken over before its lease ends.
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    rig.store.acquire_driver(rig.run_id, {"host": host, "pid": dead.pid, "token": "c"}, 30)
    rig.store.acquire_driver(rig.run_id, {"host": host, "pid": os.getppid(), "token": "d"}, 30)
    assert rig.store.live_driver(rig.store.run(rig.run_id))["token"] == "d"


def test_a_rate_limit_hold_survives_a_restart_of_the_orchestrator(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    job = claim(rig, holder)
    until = rig.clock() + 300
    rig.queues[holder].fail(
        job.id, job.fence, "rate limited", {"status": "rate_limited", "rate_limit_reset": until}
    )
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    rig.orchestrator = rig.new_orchestrator()
    rig.store.reset_phase(rig.run_id, "api", "operator retry")  # ready again at once
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "waiting"  # still held
    rig.clock.advance(301)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "dispatched"


def test_terminal_states_set_by_lease_expiry_commit_at_full_durability(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db")
    statements: list[str] = []
    queue._conn.set_trace_callback(statements.append)
    queue.enqueue("x", key="k", max_attempts=1)
    claimed = queue.claim("w", 0.01)
    assert claimed is not None
    time.sleep(0.05)
    statements.clear()
    assert queue.claim("w", 60) is None
    dead_at = next(i for i, s in enumerate(statements) if "SET state = 'dead'" in s)
    before = [s for s in statements[:dead_at] if "synchronous" in s.lower()]
    assert before and before[-1].lower().endswith("full"), statements
    assert queue.show(claimed.id).state == "dead"
    queue.close()


# -- a ready phase that no live worker can take says why (issue 11, item 4) ------------------


def test_a_ready_phase_no_live_worker_can_take_says_why_once(rig: Rig) -> None:
    rig.orchestrator.tick()  # no worker has ever beaten
    stuck = [data for kind, data in rig.events if kind == "phase_stuck"]
    assert stuck == [{"phase": "api", "reason": "no live worker (capable: w1, w2)"}]
    assert rig.store.phases(rig.run_id)["api"].reason == stuck[0]["reason"]
    rig.orchestrator.tick()
    assert len([kind for kind, _ in rig.events if kind == "phase_stuck"]) == 1  # said once
    for name in ("w1", "w2"):
        rig.queues[name].beat(name, "refusing", reason="node 18.19.0 is not the pinned 20.18.1")
    rig.clock.advance(1)
    rig.orchestrator.tick()
    (last,) = [data for kind, data in rig.events if kind == "phase_stuck"][1:]
    assert last["reason"].startswith("every capable worker refuses work (w1: node 18.19.0")
    rig.beat("w1", "w2")
    rig.clock.advance(1)
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "dispatched"


def test_stopped_workers_are_named_stopped_not_refusing(rig: Rig) -> None:
    """A worker that shut down (its last beat says `stopped`, with no reason: the demo's
    fleet after the demo) is down because it is stopped, not "refusing work: None", and a
    phase that only stopped workers could take says so (issue 11, item 4)."""
    for name in ("w1", "w2"):
        rig.queues[name].beat(name, "stopped")
    rig.orchestrator.tick()
    down = [data for kind, data in rig.events if kind == "worker_down"]
    stuck = [data for kind, data in rig.events if kind == "phase_stuck"]
    assert down == [
        {"worker": "w1", "reason": "the worker is stopped"},
        {"worker": "w2", "reason": "the worker is stopped"},
    ]
    assert stuck == [
        {"phase": "api", "reason": "every capable worker is stopped (w1, w2): start one"}
    ]
    assert rig.store.phases(rig.run_id)["api"].reason == stuck[0]["reason"]


def test_a_beat_written_before_a_worker_died_does_not_bring_it_back(rig: Rig) -> None:
    """A heartbeat first read late (after an outage, or by a restarted orchestrator) is
    aged on the clock that wrote it, not taken as fresh because it changed."""
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    other = "w2" if holder == "w1" else "w1"
    rig.clock.advance(1)
    rig.beat(holder)  # its last beat: then the machine dies, and its inbox is cut off
    rig.orchestrator.transports.close()
    db = inbox(rig, holder)
    hidden = db.with_name("dead.db")
    db.rename(hidden)
    rig.clock.advance(40)
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.store.workers()[holder].status == "down"
    rig.orchestrator.transports.close()
    hidden.rename(db)  # the disk is back; the worker is not
    rig.orchestrator = rig.new_orchestrator()  # and the orchestrator was restarted
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.store.workers()[holder].status == "down"
    assert [a.worker for a in rig.store.attempts(rig.run_id, "api")] == [holder, other]
