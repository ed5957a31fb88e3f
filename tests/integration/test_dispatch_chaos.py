"""The dispatch chaos run, short: one run of the web-app example under kills, freezes
and transport outages must finish with nothing doubled, lost or left in flight.

The checker itself is tested on a state database, inboxes and a remote that a broken
orchestrator would leave, so that a clean chaos result means something.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from control.demo import seed_remote
from control.localfleet import LocalFleet
from control.queue import Queue
from control.state import StateStore
from tests.chaos import dispatch_chaos
from tests.support import run_script_json

SCRIPT = Path(dispatch_chaos.__file__)


def _late_seed() -> int:
    """A random seed whose chaos is all due 11 s or more after the first dispatch, when
    a run left alone is on its last phase already: CI saw such a run finish before its
    only orchestrator kill was due."""
    pick = random.Random()
    while True:
        seed = pick.randrange(2**32)
        if min(at for at, _ in dispatch_chaos.schedule(seed, dispatch_chaos.Timings())) >= 11.0:
            return seed


@pytest.mark.slow
@pytest.mark.parametrize("when", ["any time", "late"])
def test_a_chaos_run_finishes_with_nothing_doubled_lost_or_left_in_flight(
    tmp_path: Path, when: str
) -> None:
    # one run: a run takes 20-100 s on the shared 2-core machine (the merge verifies too);
    # a failing run exits 1 and the assertion shows its seed, kept directory and findings.
    # Chaos due late still lands, every kind of it, before the run is done.
    seed = _late_seed() if when == "late" else random.randrange(2**32)
    # the script's own deadline (240 s) plus its settling fit in the timeout
    summary = run_script_json(
        SCRIPT, "--runs", "1", "--seed", str(seed), "--dir", str(tmp_path), timeout=400
    )
    assert set(summary) == set(dispatch_chaos.SUMMARY_KEYS)
    assert summary["runs"] == 1
    assert summary["kills_orchestrator"] >= 1, f"seed {seed}"  # at least one of each
    assert summary["kills_worker"] + summary["stops_worker"] >= 2, f"seed {seed}"
    assert summary["finished"] == summary["runs"]
    after = dispatch_chaos.SUMMARY_KEYS[dispatch_chaos.SUMMARY_KEYS.index("failed_calls") + 1 :]
    assert {k: summary[k] for k in after} == dict.fromkeys(after, 0)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _finish(inbox: Path, key: str, *, ack: bool) -> None:
    with Queue(inbox, create=False) as queue:
        queue.enqueue({"phase": key}, key=key)
        claimed = queue.claim("w", 60)
        assert claimed is not None
        queue.complete(claimed.id, claimed.fence, {"status": "done"})
        if ack:
            queue.ack(claimed.id)


def test_checker_reports_what_a_broken_orchestrator_leaves(tmp_path: Path) -> None:
    """Two accepted attempts, a moved branch, a commit not merged, an acknowledged
    response never stored, an attempt still in flight and an abandoned attempt still
    pending uncancelled on a live worker: each one is counted."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "README").write_text("seed\n")
    remote = tmp_path / "origin.git"
    seed_remote(remote, seed)
    first = _git(remote, "rev-parse", "main")
    second = _git(
        remote, "commit-tree", "-p", first, "-m", "later", _git(remote, "rev-parse", "main^{tree}")
    )
    _git(remote, "branch", "superagent/a", second)  # a was accepted at `first`: moved
    _git(remote, "branch", "superagent/b", second)  # b at `second`, not in the merge

    fleet = LocalFleet(tmp_path / "fleet", dispatch_chaos.WORKERS)
    fleet.create()
    inbox = {name: w.queue_db for name, w in fleet.workers.items()}
    state = tmp_path / "state.db"
    store = StateStore(state)
    run = store.create_run("spec", "hash", {}, [("a", "superagent/a"), ("b", "superagent/b"),
                                                 ("c", "superagent/c")])  # fmt: skip
    keys = {}
    for phase, worker in [("a", "alpha"), ("b", "gamma"), ("c", "beta")]:
        keys[phase, 1] = store.record_sending(run, phase, worker).key
    store.close()
    conn = sqlite3.connect(state)
    # a: two accepted attempts (the second recorded by hand on beta)
    conn.execute(
        "UPDATE attempts SET state = 'done', response = '{}' WHERE key = ?", (keys["a", 1],)
    )
    conn.execute(
        "INSERT INTO attempts (run_id, phase_id, attempt, key, worker, state, created_at, "
        "response) VALUES (?, 'a', 2, ?, 'beta', 'done', 0, '{}')",
        (run, f"{run}/a/2"),
    )
    conn.execute("UPDATE phases SET state = 'done', commit_sha = ? WHERE phase_id = 'a'", (first,))
    # b: attempt 1 abandoned on gamma (still pending there), attempt 2 done on alpha,
    # its response acknowledged in alpha's inbox but never stored
    conn.execute("UPDATE attempts SET state = 'abandoned' WHERE key = ?", (keys["b", 1],))
    conn.execute(
        "INSERT INTO attempts (run_id, phase_id, attempt, key, worker, state, created_at) "
        "VALUES (?, 'b', 2, ?, 'alpha', 'done', 0)",
        (run, f"{run}/b/2"),
    )
    conn.execute("UPDATE phases SET state = 'done', commit_sha = ? WHERE phase_id = 'b'", (second,))
    # c: still dispatched; the run merged at `first`
    conn.execute("UPDATE attempts SET state = 'dispatched' WHERE key = ?", (keys["c", 1],))
    conn.execute("UPDATE phases SET state = 'dispatched' WHERE phase_id = 'c'")
    conn.execute("UPDATE runs SET status = 'done', merge_commit = ?", (first,))
    conn.commit()
    conn.close()
    with Queue(inbox["gamma"], create=False) as queue:
        queue.enqueue({"phase": "b"}, key=keys["b", 1])
    _finish(inbox["alpha"], f"{run}/b/2", ack=True)
    _finish(inbox["beta"], f"{run}/a/2", ack=False)  # stored: neither lost nor unread

    found = dispatch_chaos.check(state, remote, fleet, {"alpha", "beta", "gamma"})
    assert [p["phase"] for p in found["phase_done_twice"]] == ["a"]
    assert [p["phase"] for p in found["phase_branch_moved"]] == ["a"]
    assert [p["phase"] for p in found["accepted_missing_from_integration"]] == ["b"]
    assert [p["attempt"] for p in found["lost_responses"]] == ["b#2@alpha"]
    assert found["unread"] == []
    assert [p["phase"] for p in found["phases_in_flight"]] == ["c"]
    assert found["attempts_in_flight"] == ["c#1@beta:dispatched"]
    assert [p["attempt"] for p in found["cancel_undelivered"]] == ["b#1@gamma"]
    # the same pending message on a worker that is not running is not owed yet
    found = dispatch_chaos.check(state, remote, fleet, {"alpha", "beta"})
    assert found["cancel_undelivered"] == []

    tally = dispatch_chaos.Tally(seed=1, directory=str(tmp_path), finished=True, checks=found)
    summary = dispatch_chaos.summarise([tally])
    assert summary["phase_done_twice"] == 1
    assert summary["accepted_missing_from_integration"] == 1
    assert summary["lost_responses"] == 1
    assert summary["left_in_flight"] == 2  # phase c, and its attempt
    assert dispatch_chaos.violations(tally) == [
        "phase_done_twice",
        "accepted_missing_from_integration",
        "phase_branch_moved",
        "lost_responses",
        "phases_in_flight",
        "attempts_in_flight",
    ]
