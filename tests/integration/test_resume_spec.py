"""Resuming a run by running the same `control dispatch` again: the spec it was started
from resumes it, a changed spec is refused, and a superagent that added a spec field
since (with a default) still resumes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest

from control.driver import RunDriver, legacy_spec_hash, open_run, spec_hash
from control.errors import ConflictError
from control.spec import Spec, load_spec
from control.state import StateStore
from control.transport import Transports
from control.transport.local import LocalTransport
from tests.integration.test_orchestrator import ONE_PHASE, Rig


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    built = Rig(tmp_path, ONE_PHASE)
    yield built
    built.close()


def opened(rig: Rig) -> RunDriver:
    """`control dispatch` of the rig's spec on a state database of its own."""
    return open_run(
        rig.spec_path,
        rig.workers,
        rig.root / "runs.db",
        repo_url=str(rig.remote),
        transports=Transports({"local": lambda: LocalTransport(clock=rig.clock)}),
    )


def closed(run: RunDriver) -> str:
    run.orchestrator.transports.close()
    run.store.close()
    return run.run_id


def test_the_same_spec_resumes_its_run_and_a_changed_one_is_refused(rig: Rig) -> None:
    first = opened(rig)
    assert not first.resumed
    run_id = closed(first)
    again = opened(rig)
    assert (again.resumed, closed(again)) == (True, run_id)
    document = json.loads(rig.spec_path.read_text())
    document["phases"][0]["task"] += " And log every request."
    rig.spec_path.write_text(json.dumps(document))
    with pytest.raises(ConflictError, match=f"changed since run {run_id}"):
        opened(rig)


def test_a_run_hashed_with_every_field_resumes(rig: Rig) -> None:
    """A run started by a superagent that hashed defaults too is not orphaned."""
    run_id = closed(opened(rig))
    spec = load_spec(rig.spec_path, rig.workers)
    with StateStore(rig.root / "runs.db") as store, store.write() as conn:
        conn.execute("UPDATE runs SET spec_hash = ? WHERE id = ?", (legacy_spec_hash(spec), run_id))
    again = opened(rig)
    assert (again.resumed, closed(again)) == (True, run_id)


@dataclass(frozen=True)
class LaterSpec(Spec):
    """The spec as a later superagent sees it: one field more, with its default."""

    added_later: int = 0


def test_a_field_added_later_with_its_default_keeps_the_digest(rig: Rig) -> None:
    spec = load_spec(rig.spec_path, rig.workers)
    later = LaterSpec(**{f.name: getattr(spec, f.name) for f in fields(spec)})
    assert spec_hash(later) == spec_hash(spec)
    assert legacy_spec_hash(later) != legacy_spec_hash(spec)  # what orphaned runs before
    assert spec_hash(replace(later, added_later=2)) != spec_hash(spec)  # set: it counts
    assert spec_hash(replace(spec, merge_queue=False)) != spec_hash(spec)
