"""The example specs run end to end on their recordings, with no model and no network.

For each spec of specs/examples/: a git repository holding specs/examples/seed/<spec>/; then,
in dependency order, each phase on its own branch, from the base with its prerequisites'
branches merged, replayed by the replay backend from specs/examples/replay/<spec>/, checked as
the worker checks it (every deliverable matches a file, every verify command exits 0 with
`bash -c` in the checkout, the venv's bin first on PATH) and committed with `git add --all`;
finally all the branches merged into the base, where every phase's checks pass again.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control.messages import AgentOptions
from control.worker.agents import AgentRequest, get_backend
from tests.fakes.agents import phase_task

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "specs" / "examples"
VERIFY_TIMEOUT_S = 300
GENERATED = ("__pycache__", ".pytest_cache", "node_modules", "frontend/dist", ".sqlite3")


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=superagent", "-c", "user.email=superagent@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"git {' '.join(args)} in {cwd}: {done.stderr}"
    return done.stdout


def _in_order(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The phases, each after its prerequisites; the order of the file breaks ties."""
    done: list[dict[str, Any]] = []
    while len(done) < len(phases):
        ids = {p["id"] for p in done}
        ready = [p for p in phases if p not in done and set(p.get("depends_on", [])) <= ids]
        assert ready, "the spec has a dependency cycle"
        done.append(ready[0])
    return done


def _check(checkout: Path, phase: dict[str, Any], verify: list[str]) -> None:
    for pattern in phase["deliverables"]:
        matches = glob.glob(pattern, root_dir=checkout, recursive=True)
        assert any((checkout / m).is_file() for m in matches), (
            f"{phase['id']}: deliverable {pattern} matches no file"
        )
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # The example projects use no pytest plugin; loading this venv's (hypothesis) costs 2 s a run.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    for command in verify:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT_S,
            check=False,
        )
        output = (done.stdout + done.stderr)[-3000:]
        assert done.returncode == 0, f"{phase['id']}: `{command}` exit {done.returncode}\n{output}"


def _commit_all(checkout: Path, message: str) -> None:
    _git(checkout, "add", "--all", "--", ".")
    _git(checkout, "commit", "--quiet", "--allow-empty", "-m", message)
    committed = _git(checkout, "ls-files").splitlines()
    generated = [f for f in committed if any(g in f for g in GENERATED)]
    assert not generated, f"generated files were committed (missing from .gitignore?): {generated}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "webapp"])
def test_the_recordings_replay_end_to_end(name: str, tmp_path: Path) -> None:
    spec = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    base = spec["repo"].get("base_branch", "main")
    prefix = spec["repo"].get("branch_prefix", "superagent")
    default_verify = spec.get("defaults", {}).get("verify", [])
    recordings = EXAMPLES / "replay" / name
    phases = _in_order(spec["phases"])
    assert sorted(p.name for p in recordings.iterdir()) == sorted(p["id"] for p in phases)

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "seed" / name, repo)
    _git(repo, "init", "--quiet", f"--initial-branch={base}")
    _commit_all(repo, "seed")

    replay = get_backend("replay")
    for phase in phases:
        checkout, branch = tmp_path / phase["id"], f"{prefix}/{phase['id']}"
        _git(repo, "worktree", "add", "--quiet", "-b", branch, str(checkout), base)
        for prerequisite in phase.get("depends_on", []):
            _git(checkout, "merge", "--no-ff", "--no-edit", "--quiet", f"{prefix}/{prerequisite}")
        task = phase["task"] if isinstance(phase["task"], str) else f"see {phase['task']['file']}"
        result = replay.run(
            AgentRequest(
                phase=phase_task(phase["id"], task),
                checkout=checkout,
                log_path=tmp_path / "logs" / f"{phase['id']}.log",
                options=AgentOptions(extra={"replay_dir": str(recordings)}),
            )
        )
        assert result.status == "ok", f"{phase['id']}: {result.reason}"
        summary = (recordings / phase["id"] / "summary.txt").read_text(encoding="utf-8")
        assert result.result_text == summary
        _check(checkout, phase, phase.get("verify", default_verify))
        _commit_all(checkout, f"{phase['id']}: {phase['title']}")

    merged = tmp_path / "merged"
    _git(repo, "worktree", "add", "--quiet", "--detach", str(merged), base)
    for phase in phases:
        _git(merged, "merge", "--no-ff", "--no-edit", "--quiet", f"{prefix}/{phase['id']}")
    for phase in phases:
        _check(merged, phase, phase.get("verify", default_verify))
