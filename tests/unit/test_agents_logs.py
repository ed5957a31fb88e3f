"""One log per message, and rotation that keeps the newest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from control.errors import UsageError
from control.worker.logs import log_path_for, rotate_logs


def _logs(directory: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = directory / f"{i}-p-a1.log"
        path.write_text(str(i))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
        paths.append(path)
    return paths


def test_log_path_names_message_phase_and_attempt(tmp_path: Path) -> None:
    assert log_path_for(tmp_path, 42, "build-api", 2) == tmp_path / "42-build-api-a2.log"
    odd = log_path_for(tmp_path, "run/7", "../../etc/passwd", 1)
    assert odd.parent == tmp_path
    assert "/" not in odd.name and not odd.name.startswith(".")


def test_rotation_keeps_the_newest(tmp_path: Path) -> None:
    paths = _logs(tmp_path, 5)
    (tmp_path / "notes.txt").write_text("not a log")
    assert rotate_logs(tmp_path, 2) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3-p-a1.log", "4-p-a1.log", "notes.txt"]
    assert paths[4].exists()


def test_rotation_never_removes_the_protected_log(tmp_path: Path) -> None:
    paths = _logs(tmp_path, 4)
    assert rotate_logs(tmp_path, 2, protect=paths[0]) == 2
    assert paths[0].exists() and paths[3].exists()
    assert not paths[1].exists() and not paths[2].exists()


def test_rotation_of_a_missing_directory_is_a_no_op(tmp_path: Path) -> None:
    assert rotate_logs(tmp_path / "absent", 3) == 0


def test_rotation_rejects_a_negative_count(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        rotate_logs(tmp_path, -1)
