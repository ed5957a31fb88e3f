"""The web-app example spec run to the end on three local workers with the replay agent.

Eight phases (a diamond, a phase only the Windows-files machine can do), real
worker processes, a real remote; every phase branch holds its deliverables and the
integration branch holds them all, with every verify command passing on it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from control.checkset import distinct_checks
from control.demo import EXAMPLES, example_fleet, seed_remote
from control.spec import load_spec
from tests.support import dispatch_replay

pytestmark = pytest.mark.slow


def test_the_webapp_example_runs_to_a_merged_branch(tmp_path: Path) -> None:
    remote = tmp_path / "origin.git"
    seed_remote(remote, EXAMPLES / "seed" / "webapp")
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the example project uses no pytest plugin
    fleet = example_fleet(tmp_path / "fleet", env=env, heartbeat_seconds=1)
    fleet.start()
    try:
        fleet.wait_ready()
        result = dispatch_replay(
            EXAMPLES / "webapp.json",
            inventory=fleet.inventory,
            state=tmp_path / "state.db",
            remote=remote,
            replay_dir=EXAMPLES / "replay" / "webapp",
            env=fleet.env,
            timeout_s=900,
        )
    finally:
        fleet.stop()
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    spec = load_spec(EXAMPLES / "webapp.json")
    assert summary["status"] == "done"
    # The final check ran on a worker, each distinct verify command once, and the
    # pytest commands that name different test files merged into one (control/checkset.py).
    (merged_event,) = [
        json.loads(line) for line in result.stdout.splitlines() if '"event": "merged"' in line
    ]
    assert merged_event["worker"] in ("server", "laptop", "wsl")
    asked = [(p.id, c) for p in spec.phases for c in p.verify]
    assert merged_event["checks"] == len(distinct_checks(asked))
    assert merged_event["checks"] < len({c for _, c in asked})
    assert set(summary["phases"]) == set(spec.by_id)
    assert summary["phases"]["windows-paths"]["worker"] == "wsl"  # only it can
    # The demo's own fleet: the linux-only laptop takes work too, it does not
    # idle while the server's second slot runs it (issue 20).
    assert any(p["worker"] == "laptop" for p in summary["phases"].values()), summary["phases"]
    for phase in spec.phases:
        files = git_files(remote, phase.branch)
        for deliverable in phase.deliverables:
            assert any(Path(f).match(deliverable) for f in files), (phase.id, deliverable)
    merged = git_files(remote, summary["merge_branch"])
    for phase in spec.phases:
        for deliverable in phase.deliverables:
            assert any(Path(f).match(deliverable) for f in merged), deliverable
    heads = {p: summary["phases"][p]["commit"] for p in spec.by_id}
    for phase_id, commit in heads.items():
        ancestor = subprocess.run(
            [
                "git",
                "-C",
                str(remote),
                "merge-base",
                "--is-ancestor",
                commit,
                summary["merge_commit"],
            ],
            check=False,
        )
        assert ancestor.returncode == 0, f"{phase_id} is not in the merge"


def git_files(remote: Path, ref: str) -> list[str]:
    return subprocess.run(
        ["git", "-C", str(remote), "ls-tree", "-r", "--name-only", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
