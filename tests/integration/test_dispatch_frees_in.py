"""The orchestrator tells the scheduler when each busy machine frees (`frees_in`).

Real inboxes and a real state database on the test's clock; the test is the workers.
The scheduler's rule is unit-tested (tests/unit/test_scheduler.py); this checks the
wiring: the minutes a busy machine's running phase has left, from when it was
dispatched and its estimate, reach the scheduler on a dispatch tick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from control.demo import seed_remote
from control.inventory import Worker
from control.orchestrator import Orchestrator, Settings
from control.queue import Queue
from control.spec import load_spec
from control.state import StateStore
from control.transport import Transports
from control.transport.local import LocalTransport
from tests.conftest import Clock
from tests.integration.conftest import write_spec


def phase(pid: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "title": pid,
        "task": f"Write {pid}.txt.",
        "deliverables": [f"{pid}.txt"],
        **fields,
    }


@pytest.mark.parametrize(("warmup_minutes", "build_goes_to"), [(10, None), (60, "rare")])
def test_a_phase_waits_for_a_busy_machine_only_when_its_running_phase_frees_soon(
    tmp_path: Path, warmup_minutes: int, build_goes_to: str | None
) -> None:
    # `rare` is the only machine with `scarce`; `plain` runs `warmup`, after which the
    # scarce work (`scan`) is ready. The 30-minute `build` can run on either: it leaves
    # `rare` free when `plain` frees soon (within 3/4 of the 30 minutes), else takes it.
    clock = Clock()
    remote = tmp_path / "origin.git"
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "README.md").write_text("seed\n")
    seed_remote(remote, seed)
    queues = {name: Queue(tmp_path / f"{name}.db", clock=clock) for name in ("rare", "plain")}
    workers = [
        Worker(
            name,
            frozenset(caps),
            1,
            "local",
            vars={"superagent_queue_db": str(tmp_path / f"{name}.db")},
        )
        for name, caps in (("rare", {"linux", "scarce"}), ("plain", {"linux"}))
    ]
    phases = [
        phase("warmup", worker="plain", estimate_minutes=warmup_minutes),
        phase("build", requires=["linux"], estimate_minutes=30),
        phase("scan", requires=["scarce"], depends_on=["warmup"], estimate_minutes=5),
    ]
    spec_path = write_spec(tmp_path / "spec.json", phases)
    spec = load_spec(spec_path, workers)
    store = StateStore(tmp_path / "state.db", clock=clock)
    run_id = store.create_run(
        str(spec_path), "hash", spec.to_dict(), [(p.id, p.branch) for p in spec.phases]
    )
    orchestrator = Orchestrator(
        spec,
        workers,
        store,
        Transports({"local": lambda: LocalTransport(clock=clock)}),
        Settings(heartbeat_timeout_s=30, retry_backoff_s=0),
        repo_url=str(remote),
        clock=clock,
        emit=lambda kind, data: None,
    )
    orchestrator.attach(run_id)
    try:
        store.record_sending(run_id, "warmup", "plain")  # dispatched a minute ago
        clock.advance(60)
        for name, queue in queues.items():
            queue.beat(name, "idle")
        orchestrator.tick()
        assert [a.worker for a in store.attempts(run_id, "warmup")] == ["plain"]
        assert [a.worker for a in store.attempts(run_id, "build")] == (
            [build_goes_to] if build_goes_to else []
        )
        assert len(queues["rare"].messages()) == (1 if build_goes_to else 0)
    finally:
        orchestrator.transports.close()
        store.close()
        for queue in queues.values():
            queue.close()
