"""`control dispatch` with notifications: a real dispatch process on the local fleet,
killed while its messages wait in the outbox for a webhook that is down, delivers them
all, once each, after the run is resumed."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from control.localfleet import WorkerShape
from control.notify.outbox import Outbox
from control.state import StateStore
from tests.fakes.services import Receiver
from tests.integration.conftest import Pipeline, write_spec
from tests.integration.test_dispatch import PLAN, TWO_PHASES, wait_for_event

pytestmark = pytest.mark.slow

SECRET = "dispatch-webhook-key-0123456789"


def test_a_killed_dispatch_delivers_its_waiting_notifications_after_resume(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(SECRET.encode())
    receiver.down()  # the sink is down while the first dispatch runs
    monkeypatch.setenv("SA_TEST_WEBHOOK_SECRET", SECRET)
    pipeline.plan(
        {"first": {"delay_s": 1.5, **PLAN["first"]}, "second": {"delay_s": 0.5, **PLAN["second"]}}
    )
    fleet = pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    (fleet.inventory / "group_vars").mkdir(exist_ok=True)
    (fleet.inventory / "group_vars" / "all.yml").write_text("superagent_notify_file: notify.yml\n")
    sink = {
        "name": "hook",
        "type": "webhook",
        "url": receiver.url + "/hook",
        "secret_env": "SA_TEST_WEBHOOK_SECRET",
        "kinds": ["run_created", "run_resumed", "run_done", "phase_done", "worker_down"],
        "group_s": 0.1,
        "min_interval_s": 0.2,
        "timeout_s": 2,
    }
    (fleet.inventory / "notify.yml").write_text(json.dumps({"sinks": [sink]}))
    spec = write_spec(tmp_path / "spec.json", TWO_PHASES)
    process = pipeline.start_dispatch(spec)
    try:
        wait_for_event(process, "dispatched")
        deadline = time.monotonic() + 30
        while True:  # run_created waits in the outbox, tried and refused at least once
            store = StateStore(pipeline.state)
            row = store.conn.execute(
                "SELECT attempts, state FROM outbox WHERE kind = 'run_created'"
            ).fetchone()
            store.close()
            if row is not None and row["attempts"] >= 1:
                break
            assert time.monotonic() < deadline, "run_created never tried"
            time.sleep(0.1)
        assert row["state"] == "pending"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    receiver.up()
    try:
        code, _, stderr = pipeline.dispatch(spec)
        assert code == 0, stderr
        kinds = Counter(n["kind"] for d in receiver.accepted for n in d["notices"])
        assert kinds["run_created"] == kinds["run_resumed"] == kinds["run_done"] == 1
        assert kinds["phase_done"] == 2
        keys = receiver.dedupe_keys()
        assert len(keys) == len(set(keys))
        store = StateStore(pipeline.state)
        assert Outbox(store).counts() == {"hook": {"delivered": len(keys)}}
        store.close()
        done = next(n for d in receiver.accepted for n in d["notices"] if n["kind"] == "run_done")
        assert done["context"]["merge_branch"] and done["context"]["done"] == 2
        assert receiver.refused == []
    finally:
        receiver.down()
