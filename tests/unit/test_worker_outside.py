"""Writes beside a slot's checkout in the worker's work directory, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.errors import UsageError
from control.worker.outside import Snapshot, snapshot, writes_outside

# --- writes outside the checkout -------------------------------------------------------------


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A work directory laid out as the worker's: a git workspace with slots, and more."""
    root = tmp_path / "work"
    workspace = root / "repos" / "widget-0123"
    (workspace / "repo" / "objects").mkdir(parents=True)
    (workspace / "repo" / "HEAD").write_text("ref: refs/heads/main\n")
    (workspace / "workspace.lock").write_text("")
    for slot in ("slot0", "slot1"):
        (workspace / "slots" / slot).mkdir(parents=True)
        (workspace / "slots" / slot / ".git").write_text("gitdir: ../../repo/worktrees/x\n")
        (workspace / "slots" / slot / "file.txt").write_text("x\n")
    (root / "cache").mkdir()
    (root / "cache" / "old.bin").write_text("x\n")
    (root / "notes.txt").write_text("x\n")
    (root / "logs").mkdir()
    return root


def _slot(work: Path, name: str = "slot0") -> Path:
    return work / "repos" / "widget-0123" / "slots" / name


def test_nothing_written_outside_is_nothing_reported(work: Path) -> None:
    checkout = _slot(work)
    before = snapshot(work, checkout)
    (checkout / "new.txt").write_text("inside\n")
    (checkout / "deep" / "er").mkdir(parents=True)
    (checkout / "deep" / "er" / "x").write_text("inside\n")
    assert writes_outside(before, snapshot(work, checkout)) == []


def test_writes_beside_and_above_the_checkout_are_named(work: Path) -> None:
    checkout = _slot(work)
    before = snapshot(work, checkout)
    workspace = checkout.parent.parent
    (checkout.parent / "stray.txt").write_text("../\n")  # beside the checkout
    (workspace / "stray.txt").write_text("../../\n")  # in the workspace
    (work / "notes.txt").write_text("changed\n")  # in the work root
    (work / "cache" / "old.bin").unlink()  # two levels down
    (work / "cache" / "sub").mkdir()
    (work / "top").mkdir()
    after = snapshot(work, checkout)
    assert writes_outside(before, after) == sorted(
        str(p)
        for p in [
            checkout.parent / "stray.txt",
            workspace / "stray.txt",
            work / "notes.txt",
            work / "cache" / "old.bin",
            work / "cache" / "sub",
            work / "top",
        ]
    )


def test_a_write_deeper_than_the_snapshot_shows_as_its_directory(work: Path) -> None:
    checkout = _slot(work)
    (work / "cache" / "sub").mkdir()
    before = snapshot(work, checkout)
    (work / "cache" / "sub" / "deep.txt").write_text("x\n")
    assert writes_outside(before, snapshot(work, checkout)) == [str(work / "cache" / "sub")]


def test_other_slots_and_git_are_not_the_agents_writes(work: Path) -> None:
    checkout = _slot(work)
    logs = work / "logs"
    before = snapshot(work, checkout, ignore=[logs])
    workspace = checkout.parent.parent
    (_slot(work, "slot1") / "other-agent.txt").write_text("x\n")  # another slot's agent
    (workspace / "slots" / "slot2").mkdir()  # another slot being prepared
    (workspace / "repo" / "packed-refs").write_text("")  # git in the shared clone
    (work / "repos" / "other-4567").mkdir()  # another remote's workspace
    (work / "repos" / "other-4567" / "workspace.lock").write_text("")
    (logs / "run.log").write_text("log\n")
    assert writes_outside(before, snapshot(work, checkout, ignore=[logs])) == []


def test_a_checkout_outside_the_work_root_has_its_parent_watched(
    tmp_path: Path, work: Path
) -> None:
    checkout = tmp_path / "elsewhere" / "co"
    checkout.mkdir(parents=True)
    before = snapshot(work, checkout)
    (checkout.parent / "stray.txt").write_text("x\n")
    (work / "new.txt").write_text("x\n")
    assert writes_outside(before, snapshot(work, checkout)) == [
        str(checkout.parent / "stray.txt"),
        str(work / "new.txt"),
    ]


def test_snapshots_of_different_checkouts_cannot_be_compared(work: Path) -> None:
    with pytest.raises(UsageError, match="different checkouts"):
        writes_outside(snapshot(work, _slot(work)), snapshot(work, _slot(work, "slot1")))


def test_a_snapshot_of_a_missing_work_root_is_empty(tmp_path: Path) -> None:
    empty = snapshot(tmp_path / "none", tmp_path / "none" / "slots" / "s")
    assert empty == Snapshot(checkout=tmp_path / "none" / "slots" / "s", entries={})
    assert writes_outside(empty, empty) == []
