"""`complete_and_claim`: the result and the next lease in one transaction, on real SQLite
files and a real SIGKILLed process. It keeps every rule of `complete` and of `claim`, and
no state exists in which one half happened without the other."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from control.errors import UsageError
from control.queue import Queue
from tests.conftest import Clock

REPO = Path(__file__).resolve().parents[2]


def test_stores_the_result_and_leases_the_next_message(queue: Queue) -> None:
    first = queue.enqueue({"n": 1}, key="k1")
    second = queue.enqueue({"n": 2}, key="k2")
    claimed = queue.claim("w", 60)
    assert claimed and claimed.id == first.id
    finished, nxt = queue.complete_and_claim(claimed.id, claimed.fence, {"ok": 1}, "w", 60)
    assert (finished.accepted, finished.state) == (True, "done")
    assert queue.show(first.id).response == {"ok": 1}
    assert nxt is not None
    assert (nxt.id, nxt.key, nxt.fence, nxt.attempt, nxt.payload) == (
        second.id,
        "k2",
        1,
        1,
        {"n": 2},
    )
    assert queue.show(second.id).state == "claimed"
    assert queue.claim("other", 60) is None


def test_with_nothing_left_it_completes_and_claims_none(queue: Queue) -> None:
    queue.enqueue({"n": 1})
    claimed = queue.claim("w", 60)
    assert claimed
    finished, nxt = queue.complete_and_claim(claimed.id, claimed.fence, {"ok": 1}, "w", 60)
    assert (finished.accepted, finished.state, nxt) == (True, "done", None)


def test_a_stale_fence_is_recorded_apart_and_the_next_is_still_claimed(
    queue: Queue, clock: Clock
) -> None:
    queue.enqueue({"n": 1})
    old = queue.claim("w1", 10)
    assert old
    clock.advance(11)
    new = queue.claim("w2", 10)
    assert new and new.id == old.id
    other = queue.enqueue({"n": 2})
    before = queue.show(new.id)
    finished, nxt = queue.complete_and_claim(old.id, old.fence, {"from": "w1"}, "w1", 10)
    assert (finished.accepted, finished.state, finished.current_fence) == (
        False,
        "claimed",
        new.fence,
    )
    assert queue.show(new.id) == before
    (stale,) = queue.stale_results(new.id)
    assert (stale["fence"], stale["response"]) == (1, {"from": "w1"})
    assert nxt is not None and nxt.id == other.id


def test_leases_that_ran_out_are_swept_inside_the_same_transaction(
    queue: Queue, clock: Clock
) -> None:
    lost = queue.enqueue({"n": 1})
    mine = queue.enqueue({"n": 2})
    dead_worker = queue.claim("dead", 10)
    claimed = queue.claim("w", 100)
    assert dead_worker and claimed and claimed.id == mine.id
    clock.advance(11)
    finished, nxt = queue.complete_and_claim(claimed.id, claimed.fence, {"ok": 1}, "w", 100)
    assert finished.accepted
    assert nxt is not None
    assert (nxt.id, nxt.fence, nxt.attempt) == (lost.id, 2, 2)  # a newer fence than the dead one


def test_a_failing_claim_half_rolls_the_completion_back(queue: Queue, inbox_path: Path) -> None:
    first = queue.enqueue({"n": 1})
    second = queue.enqueue({"n": 2})
    claimed = queue.claim("w", 60)
    assert claimed and claimed.id == first.id
    # A real SQLite failure inside the claim's UPDATE, raised after the completion ran.
    other = sqlite3.connect(inbox_path)
    with other:
        other.execute(
            "CREATE TRIGGER refuse_claim BEFORE UPDATE OF state ON messages "
            "WHEN OLD.state = 'pending' AND NEW.state = 'claimed' "
            "BEGIN SELECT RAISE(ABORT, 'claim refused'); END"
        )
    with pytest.raises(sqlite3.DatabaseError, match="claim refused"):
        queue.complete_and_claim(claimed.id, claimed.fence, {"ok": 1}, "w", 60)
    with Queue(inbox_path, create=False) as fresh:  # what is on disk, read anew
        kept = fresh.show(first.id)
        assert (kept.state, kept.response, kept.fence) == ("claimed", None, claimed.fence)
        assert fresh.show(second.id).state == "pending"
        assert fresh.stale_results() == []
    with other:
        other.execute("DROP TRIGGER refuse_claim")
    other.close()
    finished, nxt = queue.complete_and_claim(claimed.id, claimed.fence, {"ok": 1}, "w", 60)
    assert finished.accepted and nxt is not None and nxt.id == second.id


@pytest.mark.parametrize(
    ("worker_id", "lease", "error"),
    [("", 60, "worker id"), ("w\n", 60, "worker id"), ("w", 0, "lease_seconds")],
)
def test_bad_claimant_is_refused_before_anything_is_written(
    queue: Queue, worker_id: str, lease: float, error: str
) -> None:
    queue.enqueue({"n": 1})
    queue.enqueue({"n": 2})
    claimed = queue.claim("w", 60)
    assert claimed
    with pytest.raises(UsageError, match=error):
        queue.complete_and_claim(claimed.id, claimed.fence, {"ok": 1}, worker_id, lease)
    assert queue.show(claimed.id).state == "claimed"
    assert queue.show(claimed.id).response is None


_LOOP = textwrap.dedent(
    """
    import sys
    from control.queue import Queue

    q = Queue(sys.argv[1], create=False)
    held = q.claim("w", 300)
    print("ready", flush=True)
    while held is not None:
        _, held = q.complete_and_claim(held.id, held.fence, {"n": held.payload["n"]}, "w", 300)
    """
)


@pytest.mark.parametrize("delay_s", [0.05, 0.15, 0.3])
def test_sigkill_never_leaves_a_completion_without_its_next_claim(
    inbox_path: Path, delay_s: float
) -> None:
    """Killed at any moment, the inbox holds every done message with its result and,
    while work is left, exactly one message leased to the worker: the halves are one."""
    with Queue(inbox_path, sync="normal") as q:  # setting up: no FULL commit needed
        for n in range(3000):
            q.enqueue({"n": n})
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOOP, os.fspath(inbox_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    with Queue(inbox_path, create=False) as q:
        by_state = q.stats().by_state
        done = q.messages("done", limit=5000)
        claimed = q.messages("claimed", limit=5000)
    assert by_state["done"] + by_state["claimed"] + by_state["pending"] == 3000
    assert all(m.response == {"n": m.payload["n"]} for m in done)
    assert len(claimed) <= 1
    assert by_state["pending"] == 0 or len(claimed) == 1
