"""The dispatcher and the merge queue's check driver read "ready now" and "busy" from one
place (control/orchestrator/readiness.py), so they agree: a phase held by a `not_before`
ahead wants no slot until then, and a phase in flight takes one, for both.

A real state database and real inboxes (the local transport) on the test's clock; the
test is the workers, beating (the orchestrator tests' rig)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control.check_workers import spare_slot
from control.orchestrator import IN_FLIGHT, busy_slots, ready_now
from tests.integration.test_orchestrator import Rig

HOLD_S = 600.0
# `running` goes in flight on w1, `held` waits out a backoff, `free` is ready, `after`
# waits for `running`.
PHASES = [
    {"id": p, "title": p, "task": f"Write {p}.txt.", "deliverables": [f"{p}.txt"]}
    for p in ("running", "held", "free", "after")
]
PHASES[-1]["depends_on"] = ["running"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    built = Rig(tmp_path, PHASES, w1_slots=2)  # 3 slots in all
    built.store.record_sending(built.run_id, "running", "w1")
    failed = built.store.record_sending(built.run_id, "held", "w2")
    built.store.settle_attempt(
        failed, attempt_state="failed", phase_state="waiting", reason="verify failed",
        count_failure=True, not_before=built.clock() + HOLD_S, event="phase_retry",
    )  # fmt: skip
    yield built
    built.close()


def ready(rig: Rig) -> list[str]:
    return ready_now(rig.orchestrator.dag, rig.store.phases(rig.run_id), rig.clock())


def in_flight(rig: Rig) -> set[str]:
    return {a.phase_id for a in rig.store.attempts(rig.run_id) if a.state in IN_FLIGHT}


def busy(rig: Rig) -> int:
    return sum(busy_slots(rig.store.phases(rig.run_id).values()).values())


def test_the_dispatcher_and_the_check_driver_agree_on_what_is_ready(rig: Rig) -> None:
    # Held back and in flight are not ready; `after` waits for its prerequisite.
    assert ready(rig) == ["free"]
    assert busy_slots(rig.store.phases(rig.run_id).values()) == {"w1": 1}
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    # The dispatcher sent exactly what was ready now: `free`, not `held`.
    assert in_flight(rig) == {"running", "free"}
    assert (ready(rig), busy(rig)) == ([], 2)
    # 3 slots, 2 busy, nothing ready now: the driver may check on the third.
    assert spare_slot(rig.orchestrator)
    rig.clock.advance(HOLD_S)
    # `held` is ready now for both: the driver leaves the last slot to it...
    assert ready(rig) == ["held"]
    assert not spare_slot(rig.orchestrator)
    rig.beat("w1", "w2")
    rig.orchestrator.tick()
    # ...and the dispatcher sends it there.
    assert in_flight(rig) == {"running", "free", "held"}
    assert (ready(rig), busy(rig)) == ([], 3)
    assert not spare_slot(rig.orchestrator)
