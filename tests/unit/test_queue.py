"""Every state transition of the inbox and every error path, on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from control.errors import ConflictError, DrainedError, NotFoundError, UsageError
from control.inventory import Worker
from control.queue import Queue
from control.transport.local import LocalTransport
from tests.conftest import Clock


def test_enqueue_then_claim_returns_payload_fence_and_attempt(queue: Queue) -> None:
    sent = queue.enqueue({"phase": "api"}, key="run1/api/1")
    assert (sent.duplicate, sent.state) == (False, "pending")
    claimed = queue.claim("w1", 60)
    assert claimed is not None
    assert (claimed.id, claimed.fence, claimed.attempt) == (sent.id, 1, 1)
    assert claimed.payload == {"phase": "api"}
    assert claimed.key == "run1/api/1"
    assert queue.claim("w2", 60) is None


def test_claim_takes_oldest_first(queue: Queue) -> None:
    ids = [queue.enqueue({"n": n}).id for n in range(3)]
    taken = [queue.claim("w", 60) for _ in range(3)]
    assert [c.id for c in taken if c] == ids


def test_same_key_is_stored_once_with_no_time_window(queue: Queue, clock: Clock) -> None:
    first = queue.enqueue({"a": 1}, key="k")
    clock.advance(365 * 86400)
    again = queue.enqueue({"a": 1}, key="k")
    assert again == type(again)(first.id, True, "pending")
    assert queue.stats().by_state["pending"] == 1


def test_same_key_after_completion_reports_the_finished_state(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1}, key="k")
    claimed = queue.claim("w", 60)
    assert claimed
    queue.complete(claimed.id, claimed.fence, {"ok": True})
    again = queue.enqueue({"a": 1}, key="k")
    assert (again.id, again.duplicate, again.state) == (sent.id, True, "done")
    assert queue.claim("w", 60) is None


def test_same_key_with_other_content_is_a_conflict(queue: Queue) -> None:
    queue.enqueue({"a": 1}, key="k")
    with pytest.raises(ConflictError, match="different content"):
        queue.enqueue({"a": 2}, key="k")
    assert len(queue.messages()) == 1


def test_keyless_identical_content_within_window_is_a_duplicate(queue: Queue, clock: Clock) -> None:
    first = queue.enqueue({"text": "fix the build"})
    clock.advance(599)
    again = queue.enqueue({"text": "fix the build"})
    assert (again.id, again.duplicate) == (first.id, True)
    clock.advance(2)  # now 601 s after the first: outside the 10-minute window
    later = queue.enqueue({"text": "fix the build"})
    assert later.duplicate is False
    assert later.id != first.id


def test_key_order_does_not_change_the_content_hash(queue: Queue) -> None:
    queue.enqueue({"a": 1, "b": 2})
    assert queue.enqueue({"b": 2, "a": 1}).duplicate


def test_allow_duplicate_stores_an_intentional_repeat(queue: Queue) -> None:
    first = queue.enqueue({"text": "again"})
    second = queue.enqueue({"text": "again"}, allow_duplicate=True)
    assert not second.duplicate and second.id != first.id


def test_duplicate_window_is_configurable(inbox_path: Path, clock: Clock) -> None:
    with Queue(inbox_path, clock=clock, duplicate_window_s=5) as q:
        q.enqueue({"x": 1})
        clock.advance(6)
        assert not q.enqueue({"x": 1}).duplicate


def test_renew_extends_the_lease_for_the_current_fence(queue: Queue, clock: Clock) -> None:
    queue.enqueue({"a": 1})
    claimed = queue.claim("w", 10)
    assert claimed
    clock.advance(8)
    renewed = queue.renew(claimed.id, claimed.fence, 10)
    assert renewed.lease_expires_at == clock.now + 10
    assert renewed.cancel_requested is False
    clock.advance(8)  # 16 s after the claim, past the first lease, inside the renewed one
    assert queue.claim("other", 10) is None


def test_renew_with_a_stale_fence_is_refused(queue: Queue, clock: Clock) -> None:
    queue.enqueue({"a": 1})
    first = queue.claim("w1", 10)
    assert first
    clock.advance(11)
    second = queue.claim("w2", 10)
    assert second and second.fence == first.fence + 1 and second.attempt == 2
    with pytest.raises(ConflictError, match="fence 1 is not current"):
        queue.renew(first.id, first.fence, 10)


def test_expired_lease_is_retried_then_dead_with_reason(inbox_path: Path, clock: Clock) -> None:
    with Queue(inbox_path, clock=clock) as q:
        q.enqueue({"a": 1}, max_attempts=2)
        assert q.claim("w1", 10)
        clock.advance(11)
        retry = q.claim("w2", 10)
        assert retry and retry.attempt == 2
        clock.advance(11)
        assert q.claim("w3", 10) is None
        (message,) = q.messages()
        assert message.state == "dead"
        assert message.reason == "lease expired on attempt 2 of 2 (last owner w2)"
        assert q.responses()[0].id == message.id


def test_complete_stores_the_response_once(queue: Queue) -> None:
    queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    done = queue.complete(claimed.id, claimed.fence, {"branch": "sa/api"})
    assert (done.accepted, done.state) == (True, "done")
    again = queue.complete(claimed.id, claimed.fence, {"branch": "other"})
    assert again.accepted is False
    assert queue.show(claimed.id).response == {"branch": "sa/api"}


def test_stale_completion_is_recorded_and_changes_nothing(queue: Queue, clock: Clock) -> None:
    queue.enqueue({"a": 1})
    old = queue.claim("w1", 10)
    assert old
    clock.advance(11)
    new = queue.claim("w2", 10)
    assert new
    before = queue.show(new.id)
    late = queue.complete(old.id, old.fence, {"from": "w1"})
    assert (late.accepted, late.state, late.current_fence) == (False, "claimed", new.fence)
    assert queue.show(new.id) == before
    (stale,) = queue.stale_results(new.id)
    assert (stale["fence"], stale["outcome"], stale["response"]) == (1, "done", {"from": "w1"})
    assert queue.complete(new.id, new.fence, {"from": "w2"}).accepted
    assert queue.show(new.id).response == {"from": "w2"}


def test_fail_stores_reason_and_response(queue: Queue) -> None:
    queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    result = queue.fail(claimed.id, claimed.fence, "verify failed", {"exit": 1})
    assert (result.accepted, result.state) == (True, "failed")
    message = queue.show(claimed.id)
    assert (message.reason, message.response) == ("verify failed", {"exit": 1})


def test_fail_needs_a_reason(queue: Queue) -> None:
    queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    with pytest.raises(UsageError, match="reason"):
        queue.fail(claimed.id, claimed.fence, "")
    assert queue.show(claimed.id).state == "claimed"


def test_cancel_pending_is_immediate(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1})
    assert queue.cancel(sent.id) == "cancelled"
    assert queue.claim("w", 60) is None
    assert queue.show(sent.id).reason == "cancelled while pending"


def test_cancel_claimed_is_learned_on_renew_and_ends_cancelled(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    assert queue.cancel(sent.id) == "claimed"
    assert queue.renew(claimed.id, claimed.fence, 60).cancel_requested is True
    result = queue.fail(claimed.id, claimed.fence, "stopped on request")
    assert result.state == "cancelled"


def test_cancel_of_claimed_message_whose_lease_expires_is_not_retried(
    queue: Queue, clock: Clock
) -> None:
    sent = queue.enqueue({"a": 1})
    assert queue.claim("w", 10)
    queue.cancel(sent.id)
    clock.advance(11)
    assert queue.claim("w2", 10) is None
    assert queue.show(sent.id).state == "cancelled"


def test_cancel_finished_changes_nothing(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    queue.complete(claimed.id, claimed.fence, {})
    assert queue.cancel(sent.id) == "done"
    assert queue.show(sent.id).state == "done"


def test_cancel_by_key_before_enqueue_leaves_a_tombstone(queue: Queue) -> None:
    assert queue.cancel(key="run1/api/2") == "cancelled"
    late = queue.enqueue({"phase": "api"}, key="run1/api/2")
    assert (late.duplicate, late.state) == (True, "cancelled")
    assert queue.claim("w", 60) is None


def test_cancel_needs_exactly_one_target(queue: Queue) -> None:
    with pytest.raises(UsageError):
        queue.cancel()
    with pytest.raises(UsageError):
        queue.cancel(1, key="k")
    with pytest.raises(NotFoundError):
        queue.cancel(42)


def test_responses_wait_for_ack_and_ack_is_idempotent(queue: Queue) -> None:
    for n in range(3):
        queue.enqueue({"n": n})
    for _ in range(2):
        claimed = queue.claim("w", 60)
        assert claimed
        queue.complete(claimed.id, claimed.fence, {"n": claimed.payload["n"]})
    found = queue.responses()
    assert [m.response for m in found] == [{"n": 0}, {"n": 1}]
    assert queue.responses() == found  # reading does not consume
    queue.ack(found[0].id)
    queue.ack(found[0].id)
    assert [m.id for m in queue.responses()] == [found[1].id]


def test_ack_of_unfinished_or_unknown_message_is_refused(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1})
    with pytest.raises(ConflictError, match="pending"):
        queue.ack(sent.id)
    with pytest.raises(NotFoundError):
        queue.ack(999)
    assert queue.show(sent.id).acked_at is None


def test_ack_batch_is_all_or_nothing(queue: Queue) -> None:
    queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    queue.complete(claimed.id, claimed.fence, {})
    with pytest.raises(NotFoundError):
        queue.ack(claimed.id, 999)
    assert queue.show(claimed.id).acked_at is None


def test_release_puts_the_message_back_and_keeps_the_attempt(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    assert queue.release(claimed.id, claimed.fence, "worker stopping")
    again = queue.claim("w", 60)
    assert again and again.id == sent.id and again.attempt == 2
    assert not queue.release(claimed.id, claimed.fence, "stale")


def test_release_expired_of_only_touches_own_expired_claims(queue: Queue, clock: Clock) -> None:
    queue.enqueue({"n": 1})
    queue.enqueue({"n": 2})
    mine = queue.claim("me", 10)
    theirs = queue.claim("them", 100)
    assert mine and theirs
    assert queue.release_expired_of("me") == 0  # not expired yet
    clock.advance(11)
    assert queue.release_expired_of("me") == 1
    assert queue.show(mine.id).state == "pending"
    assert queue.show(theirs.id).state == "claimed"


def test_requeue_gives_a_dead_message_fresh_attempts_and_a_newer_fence(
    queue: Queue, clock: Clock
) -> None:
    sent = queue.enqueue({"a": 1}, max_attempts=1)
    first = queue.claim("w", 10)
    assert first
    clock.advance(11)
    assert queue.requeue_expired() == 1
    assert queue.show(sent.id).state == "dead"
    queue.requeue(sent.id)
    again = queue.claim("w", 10)
    assert again and again.attempt == 1 and again.fence > first.fence


def test_requeue_refuses_pending_done_and_unknown(queue: Queue) -> None:
    sent = queue.enqueue({"a": 1})
    with pytest.raises(ConflictError, match="pending"):
        queue.requeue(sent.id)
    with pytest.raises(NotFoundError):
        queue.requeue(77)


def test_responses_show_dead_messages_even_with_no_worker_claiming(
    queue: Queue, clock: Clock
) -> None:
    sent = queue.enqueue({"a": 1}, max_attempts=1)
    assert queue.claim("w", 10)
    clock.advance(11)
    (dead,) = queue.responses()
    assert (dead.id, dead.state) == (sent.id, "dead")


def test_heartbeat_upserts_with_versions_and_reason(queue: Queue, clock: Clock) -> None:
    queue.beat("laptop", "idle", versions={"node": "v20.18.1"})
    clock.advance(5)
    queue.beat("laptop", "refusing", versions={"node": "v18.0.0"}, reason="node v18 != v20")
    (beat,) = queue.heartbeats()
    assert (beat.status, beat.reason, beat.beat_at) == ("refusing", "node v18 != v20", clock.now)
    assert beat.versions == {"node": "v18.0.0"}


def test_stats_count_states_reexecutions_and_oldest_pending(queue: Queue, clock: Clock) -> None:
    queue.enqueue({"n": 1})
    clock.advance(30)
    queue.enqueue({"n": 2})
    assert queue.claim("w", 10)
    clock.advance(11)
    assert queue.claim("w", 10)  # message 1 again: one re-execution
    stats = queue.stats()
    assert stats.by_state["claimed"] == 1 and stats.by_state["pending"] == 1
    assert stats.reexecutions == 1
    assert stats.oldest_pending_age_s == 11


def test_prune_removes_only_old_acknowledged_finished_messages(queue: Queue, clock: Clock) -> None:
    old = queue.enqueue({"n": "old"})
    unacked = queue.enqueue({"n": "unacked"})
    for _ in range(2):
        claimed = queue.claim("w", 60)
        assert claimed
        queue.complete(claimed.id, claimed.fence, {})
    queue.ack(old.id)
    pending = queue.enqueue({"n": "pending"})
    clock.advance(8 * 86400)
    assert queue.prune(7) == 1
    assert [m.id for m in queue.messages()] == [unacked.id, pending.id]
    with pytest.raises(UsageError):
        queue.prune(-1)


def test_invalid_arguments_are_usage_errors(queue: Queue) -> None:
    with pytest.raises(UsageError, match="key"):
        queue.enqueue({}, key="")
    with pytest.raises(UsageError, match="key"):
        queue.enqueue({}, key="line\nbreak")
    with pytest.raises(UsageError, match="kind"):
        queue.enqueue({}, kind="bogus")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="max_attempts"):
        queue.enqueue({}, max_attempts=0)
    with pytest.raises(UsageError, match="worker id"):
        queue.claim("", 10)
    with pytest.raises(UsageError, match="lease_seconds"):
        queue.claim("w", 0)
    with pytest.raises(UsageError, match="state"):
        queue.messages("nope")
    assert queue.messages() == []


def test_missing_database_is_not_created_when_create_is_false(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="control queue init"):
        Queue(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_payload_that_json_cannot_encode_is_refused_and_nothing_stored(queue: Queue) -> None:
    with pytest.raises(UsageError, match="JSON"):
        queue.enqueue({"bad": object()})
    with pytest.raises(UsageError, match="JSON"):
        queue.enqueue({"nan": float("nan")})
    assert queue.messages() == []


def test_database_is_in_wal_mode_with_schema_version(inbox_path: Path, queue: Queue) -> None:
    conn = sqlite3.connect(inbox_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_an_inbox_of_schema_1_gains_the_drain_flag_and_keeps_its_messages(
    inbox_path: Path,
) -> None:
    from control import db  # noqa: PLC0415  only this test builds an old inbox by hand
    from control.queue.schema import MIGRATIONS  # noqa: PLC0415

    conn = db.connect(inbox_path, create=True)
    db.migrate(conn, MIGRATIONS[:1], "old inbox")
    conn.execute(
        "INSERT INTO messages (key, content_hash, payload, max_attempts, enqueued_at) "
        "VALUES ('k', 'h', '{}', 3, 0)"
    )
    conn.close()
    with Queue(inbox_path, create=False) as upgraded:
        assert [m.key for m in upgraded.messages()] == ["k"]
        assert upgraded.drained() is None
        assert upgraded.drain(reason="upgrade").reason == "upgrade"


def test_has_work_sees_pending_and_expired_claims_without_writing(
    queue: Queue, clock: Clock, inbox_path: Path
) -> None:
    assert not queue.has_work()
    queue.enqueue({"a": 1})
    assert queue.has_work()
    assert queue.claim("w", 10)
    assert not queue.has_work()
    clock.advance(11)
    observer = sqlite3.connect(inbox_path)  # data_version moves when another connection commits
    before = observer.execute("PRAGMA data_version").fetchone()[0]
    assert queue.has_work()
    assert observer.execute("PRAGMA data_version").fetchone()[0] == before
    assert queue.claim("w", 10)  # a real write does move it
    assert observer.execute("PRAGMA data_version").fetchone()[0] != before
    observer.close()


def test_next_lease_expiry_is_the_earliest_current_lease(queue: Queue, clock: Clock) -> None:
    assert queue.next_lease_expiry() is None
    queue.enqueue({"n": 1})
    queue.enqueue({"n": 2})
    first = queue.claim("w", 30)
    queue.claim("w", 10)
    assert first is not None
    assert queue.next_lease_expiry() == clock.now + 10


def test_a_drained_inbox_refuses_a_new_task_only_when_asked_and_through_the_protocol(
    queue: Queue, tmp_path: Path
) -> None:
    """The orchestrator's send (`unless_drained`) and the drain meet in one transaction:
    a new task is refused, nothing stored; a key already there answers as before, and
    an operator's plain enqueue still lands (the worker claims it once undrained)."""
    sent = queue.enqueue({"n": 1}, key="run/a/1")
    queue.drain(reason="upgrading")
    with pytest.raises(DrainedError, match=r"drained \(upgrading\): it takes no new task"):
        queue.enqueue({"n": 2}, key="run/b/1", unless_drained=True)
    again = queue.enqueue({"n": 1}, key="run/a/1", unless_drained=True)
    assert (again.id, again.duplicate) == (sent.id, True)
    assert [m.key for m in queue.messages()] == ["run/a/1"]
    assert queue.enqueue({"n": 3}, key="run/c/1").duplicate is False
    worker = Worker("w", frozenset(), 1, "local", vars={"superagent_queue_db": str(queue.path)})
    with pytest.raises(DrainedError, match="w: the inbox is drained"):
        LocalTransport().enqueue(worker, {"n": 4}, key="run/d/1", unless_drained=True)
    queue.undrain()
    assert LocalTransport().enqueue(worker, {"n": 4}, key="run/d/1", unless_drained=True).id
