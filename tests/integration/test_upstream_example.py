"""The boltons example: real upstream history replayed on three local workers.

specs/examples/boltons.json is made by control/recording.py from consecutive commits of
boltons (BSD-3-Clause): one phase per commit, its recording the upstream patch. Run by
`control dispatch` with the replay agent on the example fleet, it must end on two
oracles: the integration branch's tree is upstream's tree at the last commit, hash for
hash (so every byte, mode and CRLF of every file), and upstream's own test suite passes
on it. The figures (the phases' summed time against the run's, i.e. the speed-up) are
printed, not asserted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from control.demo import EXAMPLES, example_fleet, seed_of, seed_remote
from control.recording import passed_count, run_check
from control.spec import load_spec
from tests.support import dispatch_replay

pytestmark = pytest.mark.slow

NAME = "boltons"
MANIFEST = EXAMPLES / "upstream" / NAME / "upstream.json"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_upstream_history_replays_to_upstreams_tree_and_its_tests_pass(
    tmp_path: Path,
) -> None:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    spec = load_spec(EXAMPLES / f"{NAME}.json")
    assert [p["id"] for p in manifest["phases"]] == [p.id for p in spec.phases]
    remote = tmp_path / "origin.git"
    seed_remote(remote, seed_of(NAME))
    assert _git("-C", str(remote), "rev-parse", "main^{tree}") == manifest["base"]["tree"]

    fleet = example_fleet(
        tmp_path / "fleet", env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, heartbeat_seconds=1
    )
    state = tmp_path / "state.db"
    fleet.start()
    try:
        fleet.wait_ready()
        result = dispatch_replay(
            EXAMPLES / f"{NAME}.json",
            inventory=fleet.inventory,
            state=state,
            remote=remote,
            replay_dir=EXAMPLES / "replay" / NAME,
            env=fleet.env,
            timeout_s=600,
        )
    finally:
        fleet.stop()
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["status"] == "done"
    assert {p: s["state"] for p, s in summary["phases"].items()} == {
        p.id: "done" for p in spec.phases
    }

    # Oracle 1: upstream's tree at the last replayed commit, byte for byte.
    merged_tree = _git("-C", str(remote), "rev-parse", f"{summary['merge_commit']}^{{tree}}")
    assert merged_tree == manifest["last"]["tree"]

    # Oracle 2: upstream's own suite passes on the integrated tree.
    checkout = tmp_path / "integrated"
    _git("clone", "--quiet", "--branch", summary["merge_branch"], str(remote), str(checkout))
    ran = run_check(manifest["test_command"], checkout)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
    assert passed_count(ran.stdout) == manifest["tests_passed"]

    _print_figures(state, len(spec.phases), len(fleet.workers))


def _print_figures(state: Path, phases: int, workers: int) -> None:
    """The phases' summed time (what one machine doing them in turn would take, roughly)
    against the run's span from the first dispatch to the last phase done."""
    with sqlite3.connect(state) as db:
        rows = db.execute(
            "SELECT dispatched_at, finished_at FROM attempts WHERE state = 'done'"
        ).fetchall()
    serial = sum(end - start for start, end in rows)
    span = max(end for _, end in rows) - min(start for start, _ in rows)
    figures = {
        "phases": phases,
        "workers": workers,
        "phases_summed_s": round(serial, 1),
        "run_s": round(span, 1),
        "speed_up": round(serial / span, 2),
    }
    print(json.dumps(figures))
