"""The inbox against a simple in-memory model, driven by hypothesis.

Every operation is applied to both; their answers and every message's state,
attempts, fence, cancel flag and acknowledgement must agree after each step.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from control.errors import ConflictError, NotFoundError
from control.queue import FINISHED_STATES, Queue, content_hash
from tests.conftest import Clock

WINDOW = 50.0
LEASE = 10.0


@dataclass
class Model:
    id: int
    key: str | None
    kind: str
    hash: str
    max_attempts: int
    enqueued_at: float
    state: str = "pending"
    attempts: int = 0
    fence: int = 0
    lease: float | None = None
    cancel: bool = False
    acked: bool = False
    response: Any = None
    finished_at: float | None = None


@dataclass
class World:
    messages: dict[int, Model] = field(default_factory=dict)
    next_id: int = 1
    stale: dict[int, int] = field(default_factory=dict)  # message id -> stale results


class InboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.queue = Queue(
            Path(self.dir.name) / "q.db", clock=self.clock, duplicate_window_s=WINDOW
        )
        self.world = World()
        self.held: list[tuple[int, int]] = []  # (id, fence) pairs workers have seen

    def teardown(self) -> None:
        self.queue.close()
        self.dir.cleanup()

    # -- the model's own rules -------------------------------------------------

    def _expire(self) -> None:
        now = self.clock()
        for m in self.world.messages.values():
            if m.state == "claimed" and m.lease is not None and m.lease < now:
                if m.cancel:
                    m.state = "cancelled"
                elif m.attempts >= m.max_attempts:
                    m.state = "dead"
                else:
                    m.state = "pending"
                m.lease = None
                m.finished_at = None if m.state == "pending" else now

    def _ids(self) -> list[int]:
        return sorted(self.world.messages)

    # -- rules -------------------------------------------------------------------

    @rule(
        payload=st.sampled_from([{"a": 1}, {"a": 2}, {"b": [1, 2]}]),
        key=st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
        allow_duplicate=st.booleans(),
        max_attempts=st.integers(1, 3),
    )
    def enqueue(
        self, payload: Any, key: str | None, allow_duplicate: bool, max_attempts: int
    ) -> None:
        digest = content_hash("task", payload)
        now = self.clock()
        expected: tuple[int, bool, str] | type[Exception]
        same_key = [m for m in self.world.messages.values() if key is not None and m.key == key]
        if same_key:
            m = same_key[0]
            expected = (
                ConflictError
                if (m.hash != digest and m.kind != "cancel")
                else (m.id, True, m.state)
            )
        elif (
            key is None
            and not allow_duplicate
            and (
                recent := [
                    m
                    for m in self.world.messages.values()
                    if m.hash == digest and m.enqueued_at >= now - WINDOW
                ]
            )
        ):
            m = max(recent, key=lambda x: x.id)
            expected = (m.id, True, m.state)
        else:
            new = Model(self.world.next_id, key, "task", digest, max_attempts, now)
            self.world.messages[new.id] = new
            self.world.next_id += 1
            expected = (new.id, False, "pending")
        try:
            got = self.queue.enqueue(
                payload, key=key, allow_duplicate=allow_duplicate, max_attempts=max_attempts
            )
        except ConflictError:
            assert expected is ConflictError
            return
        assert (got.id, got.duplicate, got.state) == expected

    @rule(key=st.sampled_from(["k1", "k2", "k3", "k4"]))
    def cancel_by_key(self, key: str) -> None:
        found = [m for m in self.world.messages.values() if m.key == key]
        if not found:
            m = Model(self.world.next_id, key, "cancel", "", 1, self.clock(), state="cancelled")
            m.finished_at = self.clock()
            self.world.messages[m.id] = m
            self.world.next_id += 1
            expected = "cancelled"
        else:
            expected = self._cancel_model(found[0])
        assert self.queue.cancel(key=key) == expected

    def _cancel_model(self, m: Model) -> str:
        if m.state == "pending":
            m.state, m.finished_at = "cancelled", self.clock()
            return "cancelled"
        if m.state == "claimed":
            m.cancel = True
        return m.state

    @precondition(lambda self: self.world.messages)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(self._ids()))
        expected = self._cancel_model(self.world.messages[message_id])
        assert self.queue.cancel(message_id) == expected

    @rule(worker=st.sampled_from(["w1", "w2"]))
    def claim(self, worker: str) -> None:
        self._expire()
        pending = [
            m for m in self.world.messages.values() if m.state == "pending" and m.kind == "task"
        ]
        got = self.queue.claim(worker, LEASE)
        if not pending:
            assert got is None
            return
        m = min(pending, key=lambda x: x.id)
        m.state, m.attempts, m.fence = "claimed", m.attempts + 1, m.fence + 1
        m.lease = self.clock() + LEASE
        assert got is not None
        assert (got.id, got.fence, got.attempt) == (m.id, m.fence, m.attempts)
        self.held.append((m.id, m.fence))

    def _current(self, message_id: int, fence: int) -> Model | None:
        m = self.world.messages.get(message_id)
        if m is not None and m.state == "claimed" and m.fence == fence:
            return m
        return None

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        message_id, fence = data.draw(st.sampled_from(self.held))
        m = self._current(message_id, fence)
        if message_id not in self.world.messages:  # pruned since
            with pytest.raises(NotFoundError):
                self.queue.renew(message_id, fence, LEASE)
            return
        try:
            got = self.queue.renew(message_id, fence, LEASE)
        except ConflictError:
            assert m is None
            return
        assert m is not None
        m.lease = self.clock() + LEASE
        assert got.cancel_requested == m.cancel

    @precondition(lambda self: self.held)
    @rule(data=st.data(), succeed=st.booleans())
    def finish(self, data: st.DataObject, succeed: bool) -> None:
        message_id, fence = data.draw(st.sampled_from(self.held))
        m = self._current(message_id, fence)
        if message_id not in self.world.messages:  # pruned since: nothing to record against
            with pytest.raises(NotFoundError):
                self.queue.complete(message_id, fence, {"by": fence})
            return
        if succeed:
            got = self.queue.complete(message_id, fence, {"by": fence})
        else:
            got = self.queue.fail(message_id, fence, "it broke", {"by": fence})
        assert got.accepted == (m is not None)
        if m is None:
            self.world.stale[message_id] = self.world.stale.get(message_id, 0) + 1
            return
        m.state = "done" if succeed else ("cancelled" if m.cancel else "failed")
        m.lease, m.response, m.finished_at = None, {"by": fence}, self.clock()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        message_id, fence = data.draw(st.sampled_from(self.held))
        m = self._current(message_id, fence)
        assert self.queue.release(message_id, fence, "stopping") == (m is not None)
        if m is not None:
            m.state, m.lease = ("cancelled" if m.cancel else "pending"), None
            m.finished_at = self.clock() if m.cancel else None

    @precondition(lambda self: self.world.messages)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(self._ids()))
        m = self.world.messages[message_id]
        try:
            self.queue.ack(message_id)
        except ConflictError:
            assert m.state not in FINISHED_STATES
            return
        assert m.state in FINISHED_STATES
        m.acked = True

    @precondition(lambda self: self.world.messages)
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(self._ids()))
        m = self.world.messages[message_id]
        try:
            self.queue.requeue(message_id)
        except ConflictError:
            assert m.state not in ("failed", "dead", "cancelled") or m.kind != "task"
            return
        m.state, m.attempts, m.cancel, m.acked, m.response = "pending", 0, False, False, None
        m.finished_at = None

    @rule()
    def responses(self) -> None:
        self._expire()
        got = {r.id for r in self.queue.responses()}
        expected = {
            m.id for m in self.world.messages.values() if m.state in FINISHED_STATES and not m.acked
        }
        assert got == expected

    @rule(seconds=st.sampled_from([1.0, 6.0, 11.0, 60.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(days=st.sampled_from([0.0, 0.0001, 1.0]))
    def prune(self, days: float) -> None:
        cutoff = self.clock() - days * 86400
        gone = [
            i
            for i, m in self.world.messages.items()
            if m.acked and m.finished_at is not None and m.finished_at < cutoff
        ]
        assert self.queue.prune(days) == len(gone)
        for i in gone:
            del self.world.messages[i]
            self.world.stale.pop(i, None)

    @invariant()
    def same_messages(self) -> None:
        rows = {m.id: m for m in self.queue.messages(limit=10_000)}
        assert set(rows) == set(self.world.messages)
        for message_id, row in rows.items():
            m = self.world.messages[message_id]
            got = (
                row.state,
                row.attempts,
                row.fence,
                row.cancel_requested,
                row.acked_at is not None,
            )
            assert got == (m.state, m.attempts, m.fence, m.cancel, m.acked), message_id
            if m.state == "done":
                assert row.response == m.response

    @invariant()
    def stale_results_are_counted(self) -> None:
        assert len(self.queue.stale_results()) == sum(self.world.stale.values())


TestInboxModel = InboxMachine.TestCase
TestInboxModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
