"""Repository-controlled behaviour never runs in the workspace's git calls: a hostile
agent's hooks, fsmonitor, filters, sshCommand and includes, set in its checkout (a
replaced `.git`, a worktree config) or in the shared clone, against real git."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from control.git import Workspace
from tests.unit.test_git import AUTHOR, Upstream, git


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Developer\n\temail = dev@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


@pytest.fixture
def evil(tmp_path: Path, canary: Path) -> Path:
    """A program that leaves the canary when anything runs it."""
    script = tmp_path / "evil.sh"
    script.write_text(f'#!/bin/sh\necho "ran: $0 $*" >> {canary}\ncat\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "up")


@pytest.fixture
def ws(tmp_path: Path, upstream: Upstream) -> Workspace:
    return Workspace(tmp_path / "work", upstream.url, author_name=AUTHOR[0], author_email=AUTHOR[1])


def _hostile_config(evil: Path, include: Path) -> str:
    include.write_text(f"[core]\n\tfsmonitor = {evil}\n")
    return (
        f"[core]\n\tfsmonitor = {evil}\n\thooksPath = {evil.parent / 'hooks'}\n"
        f"\tsshCommand = {evil}\n\tpager = {evil}\n"
        f'[filter "x"]\n\tclean = {evil}\n\tsmudge = {evil}\n\trequired = true\n'
        f"[include]\n\tpath = {include}\n"
        f"[diff]\n\texternal = {evil}\n"
        f'[url "{evil.parent}/nowhere.git"]\n\tinsteadOf = {evil.parent}\n'
    )


def _hooks(evil: Path, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for hook in ("pre-commit", "commit-msg", "post-commit", "pre-push", "post-checkout",
                 "post-merge", "reference-transaction", "fsmonitor-watchman"):  # fmt: skip
        (where / hook).write_text(evil.read_text())
        (where / hook).chmod(0o755)


def test_a_replaced_dot_git_in_the_checkout_is_never_used(
    ws: Workspace, upstream: Upstream, evil: Path, canary: Path, tmp_path: Path
) -> None:
    prepared = ws.prepare("slot0", "phase/a", "main")
    checkout = prepared.path
    # The agent swaps the checkout's .git file for a repository of its own...
    (checkout / ".git").unlink()
    fake = checkout / ".git"
    git(tmp_path, "init", "--quiet", str(fake.parent / "x"))
    os.rename(checkout / "x" / ".git", fake)
    (checkout / "x").rmdir()
    (fake / "config").write_text(_hostile_config(evil, tmp_path / "inc1"))
    _hooks(evil, fake / "hooks")
    _hooks(evil, evil.parent / "hooks")
    # ...and asks for its filter on every file.
    (checkout / ".gitattributes").write_text("* filter=x diff=x\n")
    (checkout / "work.txt").write_text("done\n")
    head = ws.commit_all(prepared, "superagent: a")
    pushed = ws.push(prepared)
    assert pushed == head == upstream.tip("phase/a")
    assert not canary.exists(), canary.read_text()
    files = git(upstream.path, "ls-tree", "-r", "--name-only", pushed).split()
    assert "work.txt" in files and not any(f.startswith(".git/") for f in files)


def test_config_an_agent_writes_in_the_shared_clone_is_never_honoured(
    ws: Workspace, upstream: Upstream, evil: Path, canary: Path, tmp_path: Path
) -> None:
    first = ws.prepare("slot0", "phase/a", "main")
    shared = ws.repo_path
    # On a trusted host (no sandbox) the agent can reach the shared clone.
    with (shared / "config").open("a") as config:
        config.write(_hostile_config(evil, tmp_path / "inc2"))
        config.write("[extensions]\n\tworktreeConfig = true\n")
    (shared / "worktrees" / "slot0" / "config.worktree").write_text(
        f"[core]\n\tfsmonitor = {evil}\n"
    )
    _hooks(evil, shared / "hooks")
    (first.path / ".gitattributes").write_text("* filter=x\n")
    (first.path / "work.txt").write_text("done\n")
    ws.commit_all(first, "superagent: a")
    ws.push(first)
    ws.release("slot0")
    # A later phase of another run on the same clone.
    upstream.commit("main", {"more.txt": "x\n"}, "more")
    second = ws.prepare("slot1", "phase/b", "main")
    (second.path / "b.txt").write_text("b\n")
    ws.commit_all(second, "superagent: b")
    ws.push(second)
    assert not canary.exists(), canary.read_text()
    assert (shared / "config").read_text().count("fsmonitor") == 0


def test_the_system_config_and_config_variables_are_ignored(
    ws: Workspace, evil: Path, canary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system-gitconfig"
    system.write_text(_hostile_config(evil, tmp_path / "inc3"))
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(system))
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.fsmonitor")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", str(evil))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.fsmonitor'='{evil}'")
    prepared = ws.prepare("slot0", "phase/a", "main")
    (prepared.path / ".gitattributes").write_text("* filter=x\n")
    (prepared.path / "w.txt").write_text("w\n")
    ws.commit_all(prepared, "superagent: a")
    ws.push(prepared)
    assert not canary.exists(), canary.read_text()


def test_git_in_the_checkout_still_works_for_the_agent(ws: Workspace) -> None:
    """The agent's own read-only git use (status, diff, log) is unaffected."""
    prepared = ws.prepare("slot0", "phase/a", "main")
    (prepared.path / "new.txt").write_text("x\n")
    done = subprocess.run(
        ["git", "status", "--porcelain"], cwd=prepared.path, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert "?? new.txt" in done.stdout
