"""The replay backend: recorded patches and files applied to a real git checkout."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from control.messages import AgentOptions
from control.worker.agents import AgentRequest, get_backend
from tests.fakes.agents import phase_task

BACKEND = get_backend("replay")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "app.py").write_text("print('v1')\n")
    _git(repo, "add", "app.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return repo


def _request(tmp_path: Path, checkout: Path, phase: str = "p1", **extra: Any) -> AgentRequest:
    return AgentRequest(
        phase=phase_task(phase, "replayed"),
        checkout=checkout,
        log_path=tmp_path / "logs" / f"1-{phase}-a1.log",
        options=AgentOptions(extra=extra),
    )


def _patch(checkout: Path) -> str:
    (checkout / "app.py").write_text("print('v2')\n")
    text = _git(checkout, "diff")
    _git(checkout, "checkout", "--", "app.py")
    return text


def test_a_recorded_patch_is_applied(tmp_path: Path, checkout: Path) -> None:
    recordings = tmp_path / "replay"
    (recordings / "p1").mkdir(parents=True)
    (recordings / "p1" / "p1.patch").write_text(_patch(checkout))
    (recordings / "p1" / "summary.txt").write_text("Bumped to v2.")
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir=str(recordings)))
    assert result.status == "ok", result.reason
    assert (checkout / "app.py").read_text() == "print('v2')\n"
    assert result.result_text == "Bumped to v2."
    assert result.log_path.is_file()


def test_changes_patch_and_files_together(tmp_path: Path, checkout: Path) -> None:
    phase = tmp_path / "replay" / "p1"
    (phase / "files" / "docs").mkdir(parents=True)
    (phase / "changes.patch").write_text(_patch(checkout))
    (phase / "files" / "docs" / "guide.md").write_text("# Guide\n")
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir=str(tmp_path / "replay")))
    assert result.status == "ok", result.reason
    assert (checkout / "docs" / "guide.md").read_text() == "# Guide\n"
    assert "applied changes.patch" in result.reason and "copied 1 file" in result.reason


def test_a_relative_replay_dir_is_inside_the_checkout(tmp_path: Path, checkout: Path) -> None:
    (checkout / "replay" / "p1" / "files").mkdir(parents=True)
    (checkout / "replay" / "p1" / "files" / "new.txt").write_text("new\n")
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir="replay"))
    assert result.status == "ok"
    assert (checkout / "new.txt").is_file()


def test_a_recording_shipped_in_the_task(tmp_path: Path, checkout: Path) -> None:
    request = _request(
        tmp_path, checkout, replay_patch=_patch(checkout), replay_files={"src/x.py": "x = 1\n"}
    )
    result = BACKEND.run(request)
    assert result.status == "ok", result.reason
    assert (checkout / "app.py").read_text() == "print('v2')\n"
    assert (checkout / "src" / "x.py").read_text() == "x = 1\n"


def test_a_missing_recording_fails_clearly(tmp_path: Path, checkout: Path) -> None:
    (tmp_path / "replay").mkdir()
    result = BACKEND.run(_request(tmp_path, checkout, "p9", replay_dir=str(tmp_path / "replay")))
    assert result.status == "failed"
    assert "no recording for phase 'p9'" in result.reason
    empty = BACKEND.run(_request(tmp_path, checkout))
    assert empty.status == "failed" and "replay_dir" in empty.reason


def test_a_patch_that_does_not_apply_fails(tmp_path: Path, checkout: Path) -> None:
    phase = tmp_path / "replay" / "p1"
    phase.mkdir(parents=True)
    (phase / "p1.patch").write_text(_patch(checkout).replace("v1", "v0"))
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir=str(tmp_path / "replay")))
    assert result.status == "failed"
    assert "git apply p1.patch failed" in result.reason


def test_symlinks_in_a_recording_are_refused(tmp_path: Path, checkout: Path) -> None:
    files = tmp_path / "replay" / "p1" / "files"
    files.mkdir(parents=True)
    (files / "ok.txt").write_text("fine\n")
    (files / "link").symlink_to("/etc/passwd")
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir=str(tmp_path / "replay")))
    assert result.status == "failed"
    assert "symlink" in result.reason
    assert not (checkout / "ok.txt").exists()  # checked before anything was written


def test_writing_through_a_symlink_out_of_the_checkout_is_refused(
    tmp_path: Path, checkout: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (checkout / "escape").symlink_to(outside)
    files = tmp_path / "replay" / "p1" / "files" / "escape"
    files.mkdir(parents=True)
    (files / "pwned.txt").write_text("no\n")
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir=str(tmp_path / "replay")))
    assert result.status == "failed"
    assert "outside the checkout" in result.reason
    assert not (outside / "pwned.txt").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", ".git/hooks/pre-commit"])
def test_shipped_files_cannot_escape(tmp_path: Path, checkout: Path, name: str) -> None:
    result = BACKEND.run(_request(tmp_path, checkout, replay_files={name: "x"}))
    assert result.status == "failed"


def test_a_recorded_outcome_is_reported(tmp_path: Path, checkout: Path) -> None:
    phase = tmp_path / "replay" / "p1"
    phase.mkdir(parents=True)
    (phase / "outcome.json").write_text(
        json.dumps({"status": "rate_limited", "reason": "demo", "rate_limit_reset": 1760000400})
    )
    result = BACKEND.run(_request(tmp_path, checkout, replay_dir=str(tmp_path / "replay")))
    assert result.status == "rate_limited"
    assert result.rate_limit_reset == 1760000400.0
