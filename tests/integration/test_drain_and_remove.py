"""Drain, undrain and remove against the orchestrator's tick, with the test as the workers.

Real inboxes (the drain flag is a row in each), a real state database and a real git
remote; the clock is the test's. Each drained or removed worker's phase must move to
another worker as a machine loss, never as one of the phase's own failures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control import __version__, events
from control.driver import open_run
from control.inventory import Worker
from control.lifecycle import drain, gone_hosts, remove, repin, repin_running, undrain
from control.queue import Queue
from control.queue.records import Enqueued
from control.transport import Transports
from control.transport.base import TransportError
from control.transport.local import LocalTransport
from tests.integration import test_orchestrator
from tests.integration.test_orchestrator import Rig, attempts, claim

rig = test_orchestrator.rig  # the fixture: a Rig over ONE_PHASE


def dispatched_to(rig: Rig) -> tuple[str, str]:
    """Tick once with both workers beating; (the worker given `api`, the other one)."""
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    return holder, "w2" if holder == "w1" else "w1"


def test_a_drained_worker_is_given_no_new_work(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()  # both seen, nothing drained yet: w1 is the scheduler's first pick
    rig.store.settle_attempt(
        rig.store.attempts(rig.run_id, "api")[0],
        attempt_state="abandoned",
        phase_state="waiting",
        reason="test: start over",
        count_loss=True,
        event="phase_lost",
    )
    rig.queues["w1"].drain(reason="maintenance")
    rig.queues["w2"].drain()
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert attempts(rig)[1:] == []  # both drained: nothing dispatched
    assert rig.store.workers()["w1"].drained["reason"] == "maintenance"
    assert rig.store.phases(rig.run_id)["api"].reason == "every capable worker is drained (w1, w2)"
    rig.queues["w2"].undrain()
    rig.orchestrator.tick()
    assert attempts(rig)[1:] == [("w2", "dispatched")]
    assert rig.store.workers()["w2"].drained is None
    assert ("worker_undrained", {"worker": "w2"}) in rig.events


def test_a_phase_waiting_unclaimed_on_a_worker_drained_later_moves_as_a_loss(rig: Rig) -> None:
    holder, other = dispatched_to(rig)
    rig.queues[holder].drain()
    rig.beat(holder, other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]
    assert "drained" in (rig.store.attempts(rig.run_id, "api")[0].reason or "")
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.failures, phase.losses) == (0, 1)
    (left,) = rig.queues[holder].messages()
    assert left.state == "cancelled"  # the owed cancel took it out of the drained inbox
    assert claim(rig, other).payload["phase_id"] == "api"


class DrainedOnSend(LocalTransport):
    """The drain of w1 lands between the tick's poll and its send: what a rolling upgrade
    did once in bench-fleet (the orchestrator picked a host from a poll that still showed
    it undrained, and the phase landed in an inbox whose worker would never claim it)."""

    def enqueue(self, worker: Worker, payload: Any, **options: Any) -> Enqueued:
        if worker.name == "w1":
            Queue(Path(worker.vars["superagent_queue_db"]), clock=self._clock).drain(
                reason="upgrading"
            )
        return super().enqueue(worker, payload, **options)


def test_a_phase_sent_as_its_worker_is_drained_moves_with_nothing_counted(rig: Rig) -> None:
    rig.orchestrator = rig.new_orchestrator(DrainedOnSend)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()  # w1 is the scheduler's first pick; drained as the send goes out
    assert attempts(rig) == [("w1", "abandoned")]
    assert rig.queues["w1"].messages() == []  # the drained inbox refused it: nothing landed
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.state, phase.failures, phase.losses, phase.cost_usd) == ("waiting", 0, 0, 0)
    assert [kind for kind, _ in rig.events if kind.startswith("phase_")] == ["phase_moved"]
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert attempts(rig) == [("w1", "abandoned"), ("w2", "dispatched")]
    rig.answer_done("w2")
    rig.orchestrator.tick()
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.state, phase.worker, phase.failures, phase.losses) == ("done", "w2", 0, 0)
    assert not [kind for kind, _ in rig.events if kind in ("phase_lost", "phase_retry")]


def test_a_phase_running_on_a_drained_worker_finishes_there(rig: Rig) -> None:
    holder, other = dispatched_to(rig)
    job = claim(rig, holder)
    rig.queues[holder].drain()
    rig.beat(holder, other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "dispatched")]
    commit = rig.push(job.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[holder].complete(job.id, job.fence, {"status": "done", "commit": commit})
    rig.orchestrator.tick()
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.state, phase.worker, phase.failures, phase.losses) == ("done", holder, 0, 0)


def test_drain_now_hands_the_running_phase_back_and_it_moves_at_once(rig: Rig) -> None:
    holder, other = dispatched_to(rig)
    job = claim(rig, holder)
    rig.queues[holder].drain(now=True)
    # What the worker daemon does on seeing `now`: stop the run, give the message back.
    assert rig.queues[holder].release(job.id, job.fence, "handed back: worker drained --now")
    rig.beat(holder, other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.failures, phase.losses) == (0, 1)
    assert rig.queues[holder].show(job.id).state == "cancelled"
    assert rig.queues[holder].claim(holder, 60) is None


def test_drain_is_kept_in_the_inbox_and_now_only_escalates(rig: Rig) -> None:
    queue = rig.queues["w1"]
    first = queue.drain(reason="disk")
    assert (first.now, first.reason) == (False, "disk")
    again = queue.drain(now=True)
    assert (again.now, again.reason, again.since) == (True, "disk", first.since)
    assert queue.drain().now is True  # a plain drain does not undo --now
    assert queue.undrain() is True
    assert queue.drained() is None
    assert queue.undrain() is False


def test_drain_and_undrain_through_the_transport_mirror_the_state(rig: Rig) -> None:
    transports = Transports({"local": lambda: LocalTransport(clock=rig.clock)})
    try:
        w1 = rig.workers[0]
        flag = drain(w1, transports, rig.store, reason="upgrade")
        assert flag["reason"] == "upgrade" and flag["now"] is False
        assert rig.queues["w1"].drained() is not None
        assert rig.store.workers()["w1"].drained["reason"] == "upgrade"
        assert undrain(w1, transports, rig.store) is True
        assert rig.queues["w1"].drained() is None
        assert rig.store.workers()["w1"].drained is None
    finally:
        transports.close()


def test_removing_a_reachable_host_drains_it_and_reassigns_its_phase(rig: Rig) -> None:
    holder, other = dispatched_to(rig)
    job = claim(rig, holder)
    fleet = {w.name: w for w in rig.workers}
    done = remove(holder, fleet, rig.orchestrator.transports, rig.store, clock_now=rig.clock())
    assert done.drained and done.reassigned == [f"{rig.run_id}/api"]
    assert done.cancels_delivered == 1
    assert rig.queues[holder].drained() is not None
    assert rig.queues[holder].show(job.id).cancel_requested  # its run is told to stop
    assert holder not in rig.store.workers()
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.state, phase.failures, phase.losses) == ("waiting", 0, 1)
    rig.beat(holder, other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]


def delete_from_inventory(rig: Rig, host: str) -> None:
    """Delete `host` from the inventory: the next orchestrator started knows it no more."""
    rig.orchestrator.transports.close()
    rig.workers = [w for w in rig.workers if w.name != host]
    rig.orchestrator = rig.new_orchestrator()


def dropped(rig: Rig) -> list[tuple[str | None, Any]]:
    """(worker, detail) of each `cancels_dropped` event in the state database."""
    found = events.read(rig.store.conn, limit=-1)
    return [(e.worker, e.detail) for e in found if e.kind == "cancels_dropped"]


def test_a_host_deleted_from_the_inventory_mid_run_is_owed_nothing(rig: Rig) -> None:
    holder, other = dispatched_to(rig)
    job = claim(rig, holder)  # its agent runs when the host is deleted from the inventory
    delete_from_inventory(rig, holder)
    rig.beat(other)
    rig.orchestrator.tick()  # the phase goes elsewhere; nothing can reach the host: no cancel
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]
    assert rig.store.owed_cancels() == []
    reason = f"worker {holder} is no longer in the inventory"
    assert dropped(rig) == [(holder, {"count": 1, "reason": reason})]
    fleet = {w.name: w for w in rig.workers}
    assert gone_hosts(rig.store, fleet) == [holder]  # its row is left: `health` lists it
    # Its agent pushes anyway: only its own attempt ref moves; the phase finishes elsewhere.
    rig.push(job.payload["push_ref"], {"api.txt": "late\n"})
    second = claim(rig, other)
    commit = rig.push(second.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[other].complete(second.id, second.fence, {"status": "done", "commit": commit})
    rig.beat(other)
    rig.orchestrator.tick()
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.state, phase.worker, phase.failures, phase.losses) == ("done", other, 0, 1)
    assert rig.orchestrator.git.remote_commit("sa/api") == commit


def powered_off(host: str) -> type[LocalTransport]:
    """The local transport to a fleet in which `host` is powered off: nothing reaches it."""

    class PoweredOff(LocalTransport):
        def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
            if worker.name == host:
                raise TransportError(f"{host}: no route to host")
            return super().call(worker, request)

    return PoweredOff


def written_off_while_down(rig: Rig) -> tuple[str, str]:
    """The holder of `api` is powered off and written off, the cancel owed to it never
    delivered; the other worker has the phase. (holder, other)"""
    holder, other = dispatched_to(rig)
    rig.orchestrator.transports.close()
    rig.orchestrator = rig.new_orchestrator(powered_off(holder))
    rig.clock.advance(31)
    rig.beat(other)
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]
    assert [a.worker for a in rig.store.owed_cancels()] == [holder]
    return holder, other


def test_a_host_written_off_then_deleted_from_the_inventory_is_owed_nothing(rig: Rig) -> None:
    holder, other = written_off_while_down(rig)
    delete_from_inventory(rig, holder)
    rig.beat(other)
    rig.orchestrator.tick()  # nothing of its in flight: the cancels it is owed go alone
    assert rig.store.owed_cancels() == []
    reason = f"worker {holder} is no longer in the inventory"
    assert dropped(rig) == [(holder, {"count": 1, "reason": reason})]
    assert gone_hosts(rig.store, {w.name: w for w in rig.workers}) == [holder]


def test_removing_a_host_gone_from_the_inventory_drops_what_it_is_owed(rig: Rig) -> None:
    holder, _ = written_off_while_down(rig)
    rig.workers = [w for w in rig.workers if w.name != holder]  # deleted; no tick since
    fleet = {w.name: w for w in rig.workers}
    assert gone_hosts(rig.store, fleet) == [holder]
    done = remove(holder, fleet, rig.orchestrator.transports, rig.store, clock_now=rig.clock())
    assert (done.drained, done.reassigned, done.cancels_dropped) == (False, [], 1)
    assert rig.store.owed_cancels() == []
    reason = f"worker {holder} was removed from the fleet"
    assert dropped(rig) == [(holder, {"count": 1, "reason": reason})]
    assert gone_hosts(rig.store, fleet) == []


# -- a run keeps to the versions it started with ---------------------------------------


def beat_versions(rig: Rig, name: str, node: str) -> None:
    rig.queues[name].beat(name, "idle", versions={"node": node, "claude_code": "9.9.9"})


def test_a_run_gives_no_work_to_a_host_off_its_pins_until_it_matches(rig: Rig) -> None:
    rig.store.set_pins(rig.run_id, {"node": "20.0.1", "claude_code": "9.9.9"})
    beat_versions(rig, "w1", "22.0.9")  # half-way through an upgrade
    beat_versions(rig, "w2", "22.0.9")
    rig.orchestrator.tick()
    assert attempts(rig) == []
    reason = rig.store.phases(rig.run_id)["api"].reason or ""
    assert "other versions than this run's pins" in reason
    assert "w1: node 22.0.9, pinned 20.0.1" in reason
    beat_versions(rig, "w2", "v20.0.1")  # w2 matches again
    rig.orchestrator.tick()
    assert attempts(rig) == [("w2", "dispatched")]


def test_a_phase_waiting_on_a_host_that_left_the_runs_pins_moves_as_a_loss(rig: Rig) -> None:
    rig.store.set_pins(rig.run_id, {"node": "20.0.1"})
    beat_versions(rig, "w1", "20.0.1")
    beat_versions(rig, "w2", "20.0.1")
    rig.orchestrator.tick()
    holder = rig.store.attempts(rig.run_id, "api")[0].worker
    other = "w2" if holder == "w1" else "w1"
    beat_versions(rig, holder, "22.0.9")  # upgraded before it claimed the phase
    beat_versions(rig, other, "20.0.1")
    rig.orchestrator.tick()
    assert attempts(rig) == [(holder, "abandoned"), (other, "dispatched")]
    assert "off this run's pins" in (rig.store.attempts(rig.run_id, "api")[0].reason or "")
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.failures, phase.losses) == (0, 1)


def test_repin_moves_a_run_to_the_inventorys_versions(rig: Rig) -> None:
    rig.store.set_pins(rig.run_id, {"node": "20.0.1"})
    for worker in rig.workers:
        worker.vars["nodejs_version"] = "22.0.9"
    beat_versions(rig, "w1", "22.0.9")
    beat_versions(rig, "w2", "22.0.9")
    rig.orchestrator.tick()
    assert attempts(rig) == []
    pins = repin(rig.store, rig.run_id, rig.workers)
    assert pins["node"] == "22.0.9"
    assert rig.store.run(rig.run_id).pins == pins
    rig.orchestrator.tick()  # a live orchestrator reads the run's pins every tick
    assert [state for _, state in attempts(rig)] == ["dispatched"]


def test_after_a_whole_fleet_upgrade_the_unfinished_runs_move_to_the_new_pins(rig: Rig) -> None:
    old = {"superagent": __version__, "node": "20.0.1"}
    rig.store.set_pins(rig.run_id, old)
    spec = rig.spec.to_dict()
    finished = rig.store.create_run("done.json", "hash", spec, [("api", "sa/done/api")])
    rig.store.set_pins(finished, old)
    rig.store.finish_run(finished, "done")
    unpinned = rig.store.create_run("old.json", "hash", spec, [("api", "sa/old/api")])
    for worker in rig.workers:
        worker.vars["nodejs_version"] = "22.0.9"
    moved = repin_running(rig.store, rig.workers)
    new = {"superagent": __version__, "node": "22.0.9"}
    assert moved == {rig.run_id: new}
    assert rig.store.run(rig.run_id).pins == new
    assert rig.store.run(finished).pins == old  # finished: its record stays as it ran
    assert rig.store.run(unpinned).pins is None  # a run from before pins checks none
    assert repin_running(rig.store, rig.workers) == {}  # already there: nothing to say


def test_a_new_run_records_the_pins_its_inventory_shares(rig: Rig) -> None:
    for worker in rig.workers:
        worker.vars.update(nodejs_version="20.0.1", claude_code_version="9.9.9")
    rig.workers[1].vars["claude_code_version"] = "9.9.10"  # the hosts disagree: not pinned
    opened = open_run(
        rig.spec_path,
        rig.workers,
        rig.root / "fresh-state.db",
        repo_url=str(rig.remote),
        transports=Transports({"local": lambda: LocalTransport(clock=rig.clock)}),
    )
    try:
        pins = opened.store.run(opened.run_id).pins
    finally:
        opened.orchestrator.transports.close()
        opened.store.close()
    assert pins == {"superagent": __version__, "node": "20.0.1"}
