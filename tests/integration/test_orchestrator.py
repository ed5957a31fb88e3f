"""The orchestrator's tick driven step by step, with the test acting as the workers.

Real inboxes, a real state database and a real git remote (the test pushes real
commits as a worker would); the clock is the test's, so liveness is exact.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from control.demo import GIT_ID, seed_remote
from control.inventory import Worker
from control.orchestrator import Orchestrator, Settings
from control.queue import Claimed, Queue
from control.spec import load_spec
from control.state import StateStore
from control.transport import Transports
from control.transport.local import LocalTransport
from tests.conftest import Clock
from tests.injection import corpus
from tests.integration.conftest import write_spec

ONE_PHASE = [
    {
        "id": "api",
        "title": "API",
        "task": "Write api.txt holding the word ready and nothing else.",
        "deliverables": ["api.txt"],
        "verify": ["grep -qx ready api.txt"],
    }
]


class Rig:
    """Two hand-driven workers (`w1_slots` and one slot), a remote, and an orchestrator
    on the test's clock."""

    def __init__(self, root: Path, phases: list[dict[str, Any]], *, w1_slots: int = 1) -> None:
        self.root = root
        self.clock = Clock()
        self.remote = root / "origin.git"
        seed = root / "seed"
        seed.mkdir()
        (seed / "README.md").write_text("seed\n")
        seed_remote(self.remote, seed)
        self.queues: dict[str, Queue] = {}
        workers = []
        for name in ("w1", "w2"):
            db = root / f"{name}.db"
            self.queues[name] = Queue(db, clock=self.clock)
            workers.append(
                Worker(
                    name,
                    frozenset({"linux"}),
                    w1_slots if name == "w1" else 1,
                    "local",
                    vars={"superagent_queue_db": str(db)},
                )
            )
        self.spec_path = write_spec(root / "spec.json", phases)
        spec = load_spec(self.spec_path, workers)
        self.store = StateStore(root / "state.db", clock=self.clock)
        self.run_id = self.store.create_run(
            str(self.spec_path), "hash", spec.to_dict(), [(p.id, p.branch) for p in spec.phases]
        )
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.spec = spec
        self.workers = workers
        self.orchestrator = self.new_orchestrator()

    def new_orchestrator(
        self, transport: type[LocalTransport] = LocalTransport, **options: Any
    ) -> Orchestrator:
        """A fresh orchestrator on the same state: what a restart after kill -9 gets
        (`transport`: the local one or a test's subclass; `options`: the Orchestrator's
        own, such as a subclass's accounts)."""
        orchestrator = Orchestrator(
            self.spec,
            self.workers,
            self.store,
            Transports({"local": lambda: transport(clock=self.clock)}),
            Settings(heartbeat_timeout_s=30, retry_backoff_s=0),
            repo_url=str(self.remote),
            clock=self.clock,
            emit=lambda kind, data: self.events.append((kind, data)),
            **options,
        )
        orchestrator.attach(self.run_id)
        return orchestrator

    def beat(self, *names: str) -> None:
        for name in names:
            self.queues[name].beat(name, "idle")

    def answer_done(self, worker: str, files: dict[str, str] | None = None) -> str:
        """`worker` claims its message, pushes `files` (api.txt by default) to the
        attempt's own ref and answers done with that commit, as a worker finishing a
        phase does. Returns the commit."""
        job = claim(self, worker)
        commit = self.push(job.payload["push_ref"], files or {"api.txt": "ready\n"})
        self.queues[worker].complete(job.id, job.fence, {"status": "done", "commit": commit})
        return commit

    def push(self, branch: str, files: dict[str, str]) -> str:
        """Commit `files` on top of main and push them to `branch`, as a worker would."""
        work = self.root / f"push-{branch.replace('/', '-')}-{len(files)}-{time.monotonic_ns()}"
        subprocess.run(["git", "clone", "--quiet", str(self.remote), str(work)], check=True)
        for name, text in files.items():
            (work / name).write_text(text)
        subprocess.run(["git", "-C", str(work), "add", "--all"], check=True)
        subprocess.run(["git", "-C", str(work), *GIT_ID, "commit", "-qm", branch], check=True)
        subprocess.run(
            ["git", "-C", str(work), "push", "--quiet", "--force", "origin", f"HEAD:{branch}"],
            check=True,
        )
        return subprocess.run(
            ["git", "-C", str(work), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def close(self) -> None:
        self.orchestrator.transports.close()
        self.store.close()
        for queue in self.queues.values():
            queue.close()


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    built = Rig(tmp_path, ONE_PHASE)
    yield built
    built.close()


def attempts(rig: Rig) -> list[tuple[str, str]]:
    """(worker, state) of each attempt of the phase `api`, in order."""
    return [(a.worker, a.state) for a in rig.store.attempts(rig.run_id, "api")]


def claim(rig: Rig, name: str) -> Claimed:
    claimed = rig.queues[name].claim(name, 60)
    assert claimed is not None, f"nothing in {name}'s inbox"
    return claimed


def test_a_late_result_from_an_abandoned_attempt_is_recorded_and_ignored(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    first = rig.store.attempts(rig.run_id, "api")[0]
    slow = first.worker
    other = "w2" if slow == "w1" else "w1"
    job = claim(rig, slow)
    # The slow worker goes silent; the other keeps beating.
    rig.clock.advance(31)
    rig.beat(other)
    rig.orchestrator.tick()
    attempts = rig.store.attempts(rig.run_id, "api")
    assert [(a.worker, a.state) for a in attempts] == [(slow, "abandoned"), (other, "dispatched")]
    second = claim(rig, other)
    commit = rig.push(second.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[other].complete(second.id, second.fence, {"status": "done", "commit": commit})
    rig.beat(other)
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "done"
    # The slow worker wakes up, pushes its own (older) work and reports done.
    late_commit = rig.push(job.payload["push_ref"], {"api.txt": "ready\n", "late.txt": "x\n"})
    rig.queues[slow].complete(job.id, job.fence, {"status": "done", "commit": late_commit})
    rig.beat(slow, other)
    rig.orchestrator.tick()
    phase = rig.store.phases(rig.run_id)["api"]
    assert (phase.state, phase.commit_sha, phase.worker) == ("done", commit, other)
    # Each attempt pushed to its own ref; the phase's branch holds the accepted commit.
    assert rig.orchestrator.git.remote_commit("sa/api") == commit
    abandoned = rig.store.attempts(rig.run_id, "api")[0]
    assert abandoned.late_response["response"]["commit"] == late_commit
    assert (
        "late_result_ignored",
        {"phase": "api", "worker": slow, "attempt": 1, "state": "done"},
    ) in rig.events
    assert rig.queues[slow].responses() == []  # acknowledged: the worker can forget it


def test_a_worker_back_from_the_dead_has_its_stale_message_cancelled(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    slow = rig.store.attempts(rig.run_id, "api")[0].worker
    other = "w2" if slow == "w1" else "w1"
    rig.clock.advance(31)
    rig.beat(other)
    rig.orchestrator.tick()  # slow is down: its attempt is abandoned, the phase goes to other
    rig.beat(slow, other)
    rig.orchestrator.tick()  # slow is back: what it still holds is cancelled
    (stale,) = rig.queues[slow].messages()
    assert stale.state == "cancelled"
    assert rig.store.attempts(rig.run_id, "api")[0].cancel_sent
    assert claim(rig, other).payload["phase_id"] == "api"


def test_a_dispatch_interrupted_before_it_was_recorded_is_resent_and_stored_once(
    rig: Rig,
) -> None:
    rig.beat("w1", "w2")
    attempt = rig.store.record_sending(rig.run_id, "api", "w1")
    payload = rig.orchestrator.build_task(attempt).to_payload()
    rig.orchestrator.transports.enqueue(rig.workers[0], payload, key=attempt.key)
    # kill -9 here: the enqueue landed, its confirmation was never recorded.
    rig.orchestrator.transports.close()
    rig.orchestrator = rig.new_orchestrator()
    rig.orchestrator.tick()
    messages = rig.queues["w1"].messages()
    assert len(messages) == 1 and messages[0].key == attempt.key
    assert rig.store.attempts(rig.run_id, "api")[0].state == "dispatched"
    assert (
        "dispatched",
        {"phase": "api", "worker": "w1", "attempt": 1, "duplicate": True},
    ) in rig.events
    assert rig.queues["w2"].messages() == []


def test_a_done_report_whose_branch_is_not_on_the_remote_is_not_trusted(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    worker = rig.store.attempts(rig.run_id, "api")[0].worker
    job = claim(rig, worker)
    rig.queues[worker].complete(job.id, job.fence, {"status": "done", "commit": "f" * 40})
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    first = rig.store.attempts(rig.run_id, "api")[0]
    assert first.state == "failed"
    assert "but the remote has nothing" in (first.reason or "")
    assert rig.store.phases(rig.run_id)["api"].state in ("waiting", "dispatched")


def test_task_text_full_of_metacharacters_reaches_the_inbox_verbatim(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    texts = corpus(canary)
    phases = [
        {
            "id": f"p{number}",
            "title": f"Phase {number}",
            "task": "Handle this text exactly as written: " + text,
            "deliverables": [f"p{number}.txt"],
            "verify": [f"test -f p{number}.txt"],
        }
        for number, text in enumerate(texts)
    ]
    rig = Rig(tmp_path, phases)
    try:
        for queue in rig.queues.values():
            queue.beat("w1" if queue is rig.queues["w1"] else "w2", "idle")
        sent: dict[str, str] = {}
        for _ in range(len(texts)):
            rig.orchestrator.tick()
            for name, queue in rig.queues.items():
                job = queue.claim(name, 60)
                if job is not None:
                    sent[job.payload["phase_id"]] = job.payload["task"]
                    queue.fail(job.id, job.fence, "not really running it")
            rig.beat("w1", "w2")
        for number, text in enumerate(texts):
            assert sent[f"p{number}"] == "Handle this text exactly as written: " + text
        assert not canary.exists()
    finally:
        rig.close()


TWO_INDEPENDENT = [
    {
        "id": name,
        "title": name,
        "task": f"Write {name}.txt holding the word ready and nothing else.",
        "deliverables": [f"{name}.txt"],
        "verify": [f"grep -qx ready {name}.txt"],
    }
    for name in ("left", "right")
]


@pytest.fixture
def wide_rig(tmp_path: Path) -> Any:
    built = Rig(tmp_path, TWO_INDEPENDENT)
    yield built
    built.close()


def in_flight(rig: Rig) -> list[str]:
    return sorted(p for p, row in rig.store.phases(rig.run_id).items() if row.state == "dispatched")


def test_a_rate_limited_answer_holds_every_dispatch_until_its_reset(wide_rig: Rig) -> None:
    rig = wide_rig
    rig.orchestrator.settings.max_concurrent = 1
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    (first,) = in_flight(rig)
    attempt = rig.store.attempts(rig.run_id, first)[0]
    job = claim(rig, attempt.worker)
    reset = rig.clock() + 120
    rig.queues[attempt.worker].fail(
        job.id, job.fence, "usage limit", {"status": "rate_limited", "rate_limit_reset": reset}
    )
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    phase = rig.store.phases(rig.run_id)[first]
    assert (phase.state, phase.failures, phase.not_before) == ("waiting", 0, reset)
    assert in_flight(rig) == []  # the other phase waits too: the account is shared
    rig.clock.advance(119)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert in_flight(rig) == []
    rig.clock.advance(2)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert len(in_flight(rig)) == 1  # and max_concurrent still holds


def test_max_concurrent_and_stagger_limit_starts_fleet_wide(wide_rig: Rig) -> None:
    rig = wide_rig
    rig.orchestrator.settings.stagger_s = 30
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert len(in_flight(rig)) == 1  # two ready, two free workers: one start per 30 s
    rig.clock.advance(10)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert len(in_flight(rig)) == 1
    rig.clock.advance(21)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert in_flight(rig) == ["left", "right"]
    workers = {a.worker for a in rig.store.attempts(rig.run_id)}
    assert workers == {"w1", "w2"}


def test_a_message_pending_too_long_on_a_live_worker_raises_one_alert(rig: Rig) -> None:
    rig.orchestrator.settings.pending_alert_s = 600
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    for _ in range(3):  # the worker beats but never claims
        rig.clock.advance(250)
        rig.beat("w1", "w2")
        rig.orchestrator.tick()
    alerts = [data for kind, data in rig.events if kind == "alert_pending"]
    assert len(alerts) == 1
    assert alerts[0]["oldest_pending_s"] > 600


def test_a_done_report_waits_unacknowledged_while_the_remote_cannot_be_checked(rig: Rig) -> None:
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    worker = rig.store.attempts(rig.run_id, "api")[0].worker
    job = claim(rig, worker)
    commit = rig.push(job.payload["push_ref"], {"api.txt": "ready\n"})
    rig.queues[worker].complete(job.id, job.fence, {"status": "done", "commit": commit})
    hidden = rig.remote.with_name("origin-away.git")
    rig.remote.rename(hidden)  # the remote is unreachable for a while
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "dispatched"
    assert [m.id for m in rig.queues[worker].responses()] == [job.id]  # not acknowledged
    hidden.rename(rig.remote)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    assert rig.store.phases(rig.run_id)["api"].state == "done"
    assert rig.queues[worker].responses() == []
