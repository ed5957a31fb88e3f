"""The worker's git workspace against real git: a bare remote in a temporary directory,
a developer clone that pushes to it, and the workspace that prepares, commits and pushes."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from pathlib import Path

import pytest

from control.errors import (
    ConflictError,
    ExitCode,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from control.git import (
    GitError,
    MergeConflict,
    Prepared,
    PushRejected,
    Workspace,
    validate_branch,
    validate_remote_url,
    workspace_root,
)
from control.messages import PrerequisiteRef

AUTHOR = ("superagent worker", "worker@fleet.example")


def git(cwd: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No machine or user configuration leaks into these tests."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Developer\n\temail = dev@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


class Upstream:
    """A bare remote and a developer's clone of it that pushes commits on any branch."""

    def __init__(self, root: Path) -> None:
        self.path = root / "remote.git"
        self.url = str(self.path)
        self.dev = root / "dev"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.path))
        git(root, "init", "--quiet", "--initial-branch=main", str(self.dev))
        self.commit("main", {"README.md": "demo\n", "a.txt": "one\ntwo\nthree\n"}, "seed")

    def commit(
        self, branch: str, files: dict[str, str], message: str, *, start: str | None = None
    ) -> str:
        """Commit `files` on `branch` (created from `start` if new) and push; the sha."""
        if start is not None:
            git(self.dev, "checkout", "--quiet", "-B", branch, f"origin/{start}")
        elif git(self.dev, "branch", "--list", branch):
            git(self.dev, "checkout", "--quiet", branch)
        else:
            git(self.dev, "checkout", "--quiet", "--orphan", branch)
        for name, text in files.items():
            (self.dev / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dev / name).write_text(text)
        git(self.dev, "add", "--all")
        git(self.dev, "commit", "--quiet", "-m", message)
        git(self.dev, "push", "--quiet", "--force", self.url, f"HEAD:refs/heads/{branch}")
        git(self.dev, "fetch", "--quiet", self.url, "+refs/heads/*:refs/remotes/origin/*")
        return git(self.dev, "rev-parse", "HEAD")

    def tip(self, branch: str) -> str | None:
        return git(self.path, "rev-parse", "--verify", "--quiet", branch, check=False) or None


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path)


@pytest.fixture
def prereqs(upstream: Upstream) -> dict[str, PrerequisiteRef]:
    """p1 and p2 both rewrite the first line of a.txt (they conflict); p3 adds a file."""
    shas = {
        "p1": upstream.commit(
            "phase/p1", {"a.txt": "one (p1)\ntwo\nthree\n", "p1.txt": "p1\n"}, "p1", start="main"
        ),
        "p2": upstream.commit(
            "phase/p2", {"a.txt": "one (p2)\ntwo\nthree\n", "p2.txt": "p2\n"}, "p2", start="main"
        ),
        "p3": upstream.commit("phase/p3", {"p3.txt": "p3\n"}, "p3", start="main"),
    }
    return {name: PrerequisiteRef(name, f"phase/{name}", sha) for name, sha in shas.items()}


@pytest.fixture
def ws(tmp_path: Path, upstream: Upstream) -> Workspace:
    return Workspace(tmp_path / "work", upstream.url, author_name=AUTHOR[0], author_email=AUTHOR[1])


def status(path: Path) -> str:
    return git(path, "status", "--porcelain", "--untracked-files=all", "--ignored")


# --- prepare ---------------------------------------------------------------------------------


def test_prepare_checks_out_the_base_detached_in_the_slot(
    ws: Workspace, upstream: Upstream
) -> None:
    prepared = ws.prepare("slot0", "phase/new", "main", [])
    assert prepared.path == ws.slot_path("slot0") == ws.root / "slots" / "slot0"
    assert prepared.base_commit == upstream.tip("main")
    assert prepared.head == prepared.base_commit
    assert prepared.merged == []
    assert prepared.old_remote_commit is None
    assert git(prepared.path, "rev-parse", "HEAD") == prepared.base_commit
    assert git(prepared.path, "symbolic-ref", "-q", "HEAD", check=False) == ""  # detached
    assert (prepared.path / "a.txt").read_text() == "one\ntwo\nthree\n"
    assert status(prepared.path) == ""


def test_prerequisites_are_merged_at_their_commits_by_the_worker(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [prereqs["p1"], prereqs["p3"]])
    assert (prepared.path / "p1.txt").exists() and (prepared.path / "p3.txt").exists()
    assert (prepared.path / "a.txt").read_text().startswith("one (p1)")
    assert [m["commit"] for m in prepared.merged] == [prereqs["p1"].commit, prereqs["p3"].commit]
    assert [m["phase"] for m in prepared.merged] == ["p1", "p3"]
    assert prepared.merged[-1]["head"] == prepared.head
    for merge in prepared.merged:
        parents = git(prepared.path, "rev-list", "--parents", "-n", "1", merge["head"]).split()
        assert parents[2] == merge["commit"]  # --no-ff: a real merge commit of that commit
        who = git(prepared.path, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", merge["head"])
        assert who.startswith(f"{AUTHOR[0]} <{AUTHOR[1]}>|{AUTHOR[0]} <{AUTHOR[1]}>|")
        assert merge["phase"] in who
    assert status(prepared.path) == ""


def test_the_named_commit_is_merged_even_when_the_branch_moved_on(
    ws: Workspace, upstream: Upstream, prereqs: dict[str, PrerequisiteRef]
) -> None:
    named = prereqs["p3"]
    later = upstream.commit("phase/p3", {"p3.txt": "p3, later\n", "late.txt": "x\n"}, "later")
    prepared = ws.prepare("slot0", "phase/four", "main", [named])
    assert (prepared.path / "p3.txt").read_text() == "p3\n"
    assert not (prepared.path / "late.txt").exists()
    assert git(prepared.path, "merge-base", "--is-ancestor", named.commit, "HEAD") == ""
    moved = subprocess.run(
        ["git", "merge-base", "--is-ancestor", later, "HEAD"], cwd=prepared.path, check=False
    )
    assert moved.returncode == 1


def test_a_commit_that_is_not_on_its_branch_is_refused(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    wrong = PrerequisiteRef("p1", "phase/p1", prereqs["p2"].commit)  # exists, other branch
    with pytest.raises(ConflictError, match=r"'p1': commit .* is not on branch 'phase/p1'"):
        ws.prepare("slot0", "phase/four", "main", [wrong])
    unknown = PrerequisiteRef("p1", "phase/p1", "ab" * 20)  # exists nowhere
    with pytest.raises(ConflictError, match="is not on branch"):
        ws.prepare("slot0", "phase/four", "main", [unknown])


def test_a_missing_base_or_prerequisite_branch_is_not_found(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    with pytest.raises(NotFoundError, match="base branch 'develop' is not on the remote"):
        ws.prepare("slot0", "phase/four", "develop", [])
    gone = PrerequisiteRef("p9", "phase/p9", prereqs["p1"].commit)
    with pytest.raises(NotFoundError, match="prerequisite 'p9': branch 'phase/p9' is not on"):
        ws.prepare("slot0", "phase/four", "main", [gone])


def test_conflicting_prerequisites_name_the_files_and_leave_the_checkout_clean(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    with pytest.raises(MergeConflict) as caught:
        ws.prepare("slot0", "phase/four", "main", [prereqs["p1"], prereqs["p2"]])
    error = caught.value
    assert error.files == ["a.txt"]
    assert (error.phase, error.branch, error.commit) == ("p2", "phase/p2", prereqs["p2"].commit)
    assert error.exit_code == ExitCode.CONFLICT
    assert "conflicts in a.txt" in str(error) and "\n" not in str(error)
    path = ws.slot_path("slot0")
    assert status(path) == ""
    assert not (Path(git(path, "rev-parse", "--git-dir")) / "MERGE_HEAD").exists()
    assert (path / "a.txt").read_text().startswith("one (p1)")  # as before the failed merge


def test_a_merge_that_fails_without_conflicts_is_a_git_error(
    ws: Workspace, upstream: Upstream
) -> None:
    orphan = upstream.commit("phase/orphan", {"other.txt": "x\n"}, "unrelated")
    prerequisite = PrerequisiteRef("orphan", "phase/orphan", orphan)
    with pytest.raises(GitError, match=r"`git merge` failed .*'orphan'.*unrelated histories"):
        ws.prepare("slot0", "phase/four", "main", [prerequisite])
    assert status(ws.slot_path("slot0")) == ""


def test_the_remote_branch_of_an_earlier_attempt_becomes_the_lease(
    ws: Workspace, upstream: Upstream
) -> None:
    earlier = upstream.commit("phase/four", {"try1.txt": "1\n"}, "attempt 1", start="main")
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    assert prepared.old_remote_commit == earlier
    assert prepared.head == upstream.tip("main")  # a fresh start, not the earlier attempt
    (prepared.path / "try2.txt").write_text("2\n")
    sha = ws.commit_all(prepared, "superagent: four (run-1)")
    assert ws.push(prepared) == sha == upstream.tip("phase/four")


# --- commit and push -------------------------------------------------------------------------


def test_commit_all_and_push_report_the_commit_on_the_remote(
    ws: Workspace, upstream: Upstream, prereqs: dict[str, PrerequisiteRef]
) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [prereqs["p3"]])
    (prepared.path / "new.txt").write_text("made by the agent\n")
    (prepared.path / "a.txt").write_text("changed\n")
    (prepared.path / "README.md").unlink()
    sha = ws.commit_all(prepared, "superagent: four (run-1)")
    assert sha != prepared.head
    assert git(prepared.path, "rev-parse", "HEAD^") == prepared.head
    line = git(prepared.path, "log", "-1", "--format=%an|%ae|%cn|%ce|%s")
    assert line == f"{AUTHOR[0]}|{AUTHOR[1]}|{AUTHOR[0]}|{AUTHOR[1]}|superagent: four (run-1)"
    changed = git(prepared.path, "show", "--name-status", "--format=", "HEAD").splitlines()
    assert sorted(changed) == ["A\tnew.txt", "D\tREADME.md", "M\ta.txt"]
    assert status(prepared.path) == ""
    assert ws.push(prepared) == sha
    assert ws.remote_commit("phase/four") == sha
    assert git(upstream.path, "ls-remote", upstream.url, "refs/heads/phase/four").split()[0] == sha


def test_commit_all_without_changes_returns_the_prepared_commit(
    ws: Workspace, upstream: Upstream, prereqs: dict[str, PrerequisiteRef]
) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [prereqs["p1"]])
    assert ws.commit_all(prepared, "superagent: four (run-1)") == prepared.head
    assert ws.push(prepared) == prepared.head == upstream.tip("phase/four")


def test_the_agents_own_commits_are_kept(ws: Workspace) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    (prepared.path / "agent.txt").write_text("1\n")
    git(prepared.path, "add", "agent.txt")
    git(prepared.path, "commit", "--quiet", "-m", "the agent's commit")
    own = git(prepared.path, "rev-parse", "HEAD")
    (prepared.path / "more.txt").write_text("2\n")
    sha = ws.commit_all(prepared, "superagent: four (run-1)")
    assert git(prepared.path, "rev-parse", "HEAD^") == own
    assert ws.push(prepared) == sha


def test_a_rewritten_history_is_refused(ws: Workspace, prereqs: dict[str, PrerequisiteRef]) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [prereqs["p1"]])
    git(prepared.path, "reset", "--quiet", "--hard", prepared.base_commit)
    with pytest.raises(ConflictError, match="no longer contains the prepared commit"):
        ws.commit_all(prepared, "superagent: four (run-1)")


def test_commit_all_needs_a_message_and_a_checkout(ws: Workspace) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    with pytest.raises(UsageError, match="commit message cannot be empty"):
        ws.commit_all(prepared, "  \n")
    ws.release("slot0")
    with pytest.raises(NotFoundError, match="slot 'slot0' has no checkout"):
        ws.commit_all(prepared, "superagent: four (run-1)")
    with pytest.raises(NotFoundError, match="released"):
        ws.push(prepared)


def test_the_lease_refuses_a_push_when_someone_else_pushed(
    ws: Workspace, upstream: Upstream
) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    theirs = upstream.commit("phase/four", {"theirs.txt": "x\n"}, "someone else", start="main")
    (prepared.path / "ours.txt").write_text("y\n")
    ws.commit_all(prepared, "superagent: four (run-1)")
    with pytest.raises(PushRejected) as caught:
        ws.push(prepared)
    error = caught.value
    assert isinstance(error, GitError)
    assert error.exit_code == ExitCode.CONFLICT
    assert (error.branch, error.expected, error.found) == ("phase/four", None, theirs)
    assert "'phase/four'" in str(error) and theirs in str(error)
    assert upstream.tip("phase/four") == theirs  # untouched


def test_the_lease_also_holds_against_a_moved_existing_branch(
    ws: Workspace, upstream: Upstream
) -> None:
    first = upstream.commit("phase/four", {"one.txt": "1\n"}, "attempt 1", start="main")
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    moved = upstream.commit("phase/four", {"two.txt": "2\n"}, "someone else")
    (prepared.path / "ours.txt").write_text("y\n")
    ws.commit_all(prepared, "superagent: four (run-2)")
    with pytest.raises(PushRejected, match=f"expected {first}, found {moved}"):
        ws.push(prepared)


def test_remote_commit_of_a_missing_branch_is_none(ws: Workspace, upstream: Upstream) -> None:
    assert ws.remote_commit("phase/none") is None
    assert ws.remote_commit("main") == upstream.tip("main")


# --- slots -----------------------------------------------------------------------------------


def test_two_slots_prepare_at_once_in_their_own_worktrees(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    start = threading.Barrier(2)
    results: dict[str, Prepared] = {}
    errors: list[BaseException] = []

    def run(slot: str, branch: str, prerequisite: PrerequisiteRef) -> None:
        try:
            start.wait(timeout=30)
            results[slot] = ws.prepare(slot, branch, "main", [prerequisite])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=("slot0", "phase/x", prereqs["p1"])),
        threading.Thread(target=run, args=("slot1", "phase/y", prereqs["p2"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    one, two = results["slot0"], results["slot1"]
    assert one.path != two.path
    assert (one.path / "p1.txt").exists() and not (one.path / "p2.txt").exists()
    assert (two.path / "p2.txt").exists() and not (two.path / "p1.txt").exists()
    listed = git(ws.repo_path, "worktree", "list", "--porcelain")
    assert f"worktree {one.path}" in listed and f"worktree {two.path}" in listed
    for prepared in (one, two):
        (prepared.path / f"{prepared.slot}.txt").write_text("done\n")
        sha = ws.commit_all(prepared, f"superagent: {prepared.branch}")
        assert ws.push(prepared) == sha


def test_a_stale_worktree_of_a_crashed_run_is_cleaned(
    tmp_path: Path, upstream: Upstream, prereqs: dict[str, PrerequisiteRef]
) -> None:
    ws = Workspace(tmp_path / "work", upstream.url, author_name="a", author_email="a@b")
    crashed = ws.prepare("slot0", "phase/four", "main", [prereqs["p1"]])
    (crashed.path / "half-done.txt").write_text("x\n")
    (crashed.path / "a.txt").write_text("dirty\n")
    (crashed.path / "readonly").mkdir()
    (crashed.path / "readonly" / "f").write_text("x\n")
    (crashed.path / "readonly").chmod(0o500)
    admin = Path(git(crashed.path, "rev-parse", "--absolute-git-dir"))
    (admin / "index.lock").write_text("")  # git was killed mid-command
    git(ws.repo_path, "worktree", "lock", str(crashed.path))
    (ws.repo_path / "refs" / "superagent" / "remote" / "main.lock").write_text("")  # a fetch too

    restarted = Workspace(tmp_path / "work", upstream.url, author_name="a", author_email="a@b")
    again = restarted.prepare("slot0", "phase/four", "main", [prereqs["p3"]])
    assert again.path == crashed.path
    assert status(again.path) == ""
    assert not (again.path / "half-done.txt").exists()
    assert not (again.path / "p1.txt").exists() and (again.path / "p3.txt").exists()


@pytest.mark.parametrize("damage", ["directory deleted", "registration deleted"])
def test_a_half_removed_worktree_is_cleaned(ws: Workspace, damage: str) -> None:
    first = ws.prepare("slot0", "phase/four", "main", [])
    (first.path / "junk.txt").write_text("x\n")
    if damage == "directory deleted":
        git(first.path, "status")  # still a worktree here
        for item in sorted(first.path.rglob("*"), reverse=True):
            item.unlink() if item.is_file() or item.is_symlink() else item.rmdir()
        first.path.rmdir()
    else:
        admin = Path(git(first.path, "rev-parse", "--absolute-git-dir"))
        for item in sorted(admin.rglob("*"), reverse=True):
            item.unlink() if item.is_file() else item.rmdir()
        admin.rmdir()
    again = ws.prepare("slot0", "phase/four", "main", [])
    assert status(again.path) == ""
    assert not (again.path / "junk.txt").exists()


def test_release_removes_the_checkout(ws: Workspace) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    (prepared.path / "junk.txt").write_text("x\n")
    ws.release("slot0")
    assert not prepared.path.exists()
    assert str(prepared.path) not in git(ws.repo_path, "worktree", "list")
    ws.release("slot0")  # nothing left: still fine
    ws.release("slot9")


def test_release_before_any_clone_removes_a_leftover_directory(
    tmp_path: Path, upstream: Upstream
) -> None:
    ws = Workspace(tmp_path / "w", upstream.url, author_name="a", author_email="a@b")
    ws.release("slot0")
    ws.slot_path("slot0").mkdir(parents=True)
    ws.release("slot0")
    assert not ws.slot_path("slot0").exists()


def test_a_workspace_serves_one_remote(tmp_path: Path, upstream: Upstream) -> None:
    ws = Workspace(tmp_path / "w", upstream.url, author_name="a", author_email="a@b")
    ws.prepare("slot0", "phase/four", "main", [])
    other = Upstream(tmp_path / "other")
    stranger = Workspace(tmp_path / "w", other.url, author_name="a", author_email="a@b")
    with pytest.raises(ConflictError, match="belongs to"):
        stranger.prepare("slot1", "phase/four", "main", [])


def test_workspace_root_is_one_directory_per_remote(tmp_path: Path) -> None:
    one = workspace_root(tmp_path, "git@github.com:acme/widget.git")
    assert one.parent == tmp_path / "repos" and one.name.startswith("widget-")
    assert workspace_root(tmp_path, "git@github.com:acme/widget.git") == one
    assert workspace_root(tmp_path, "https://github.com/acme/widget") != one
    assert workspace_root(tmp_path, "ssh://h/").name.startswith("h-")
    with pytest.raises(UsageError):
        workspace_root(tmp_path, "-oProxyCommand=x")


# --- what git is allowed to do ---------------------------------------------------------------


def test_repository_hooks_never_run(ws: Workspace, tmp_path: Path) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    marker = tmp_path / "hook-ran"
    hooks = ws.repo_path / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("pre-commit", "commit-msg", "post-commit", "pre-push", "post-checkout"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> {marker}\nexit 1\n")
        (hooks / name).chmod(0o755)
    git(ws.repo_path, "config", "core.hooksPath", str(hooks))
    (prepared.path / "x.txt").write_text("x\n")
    ws.commit_all(prepared, "superagent: four")
    ws.push(prepared)
    ws.prepare("slot0", "phase/five", "main", [])
    assert not marker.exists()


def test_a_git_environment_of_the_worker_does_not_leak_in(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "index"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    (prepared.path / "x.txt").write_text("x\n")
    ws.commit_all(prepared, "superagent: four")
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert git(prepared.path, "log", "-1", "--format=%an") == AUTHOR[0]


def test_a_failing_git_command_names_itself_and_hides_credentials(tmp_path: Path) -> None:
    ws = Workspace(
        tmp_path / "w",
        "https://someone@127.0.0.1:9/acme/widget.git",  # nothing listens on port 9
        author_name="a",
        author_email="a@b",
        timeout_s=60,
    )
    with pytest.raises(GitError) as caught:
        ws.prepare("slot0", "phase/four", "main", [])
    message = str(caught.value)
    assert message.startswith("`git fetch` failed with exit code")
    assert "https://***@127.0.0.1:9/acme/widget.git" in message
    assert "someone" not in message and "\n" not in message
    assert caught.value.command == "git fetch"
    with pytest.raises(GitError, match="`git ls-remote` failed"):
        ws.remote_commit("main")


def test_a_hanging_git_command_is_killed_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "ssh.pid"
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text(f"#!/bin/sh\necho $$ > {pids}\nexec sleep 30\n")
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH", str(fake_ssh))
    ws = Workspace(
        tmp_path / "w", "ssh://git@example.invalid/acme.git",
        author_name="a", author_email="a@b", timeout_s=1,
    )  # fmt: skip
    with pytest.raises(GitError, match=r"`git fetch` timed out after 1s \(remote ssh://\*\*\*@"):
        ws.prepare("slot0", "phase/four", "main", [])
    pid = int(pids.read_text())
    with pytest.raises(ProcessLookupError):  # the whole group went, ssh included
        for _ in range(100):
            os.kill(pid, 0)
            threading.Event().wait(0.05)


def test_a_held_lock_times_out_as_unavailable(tmp_path: Path, upstream: Upstream) -> None:
    ws = Workspace(tmp_path / "w", upstream.url, author_name="a", author_email="a@b", timeout_s=0.3)
    ws.root.mkdir(parents=True)
    with open(ws.root / "workspace.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(UnavailableError, match="stayed locked"):
            ws.prepare("slot0", "phase/four", "main", [])
        with pytest.raises(UnavailableError, match="stayed locked"):
            ws.release("slot0")


def test_git_missing_from_the_machine_is_unavailable(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UnavailableError, match="cannot run git: it is not installed"):
        ws.prepare("slot0", "phase/four", "main", [])


def test_ignored_names_the_files_git_leaves_out(ws: Workspace, upstream: Upstream) -> None:
    upstream.commit("main", {".gitignore": "build/\n*.log\n"}, "ignore")
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    assert ws.ignored(prepared, ["build/out.bin", "notes.log", "src/main.py"]) == [
        "build/out.bin",
        "notes.log",
    ]
    assert ws.ignored(prepared, []) == []


# --- names -----------------------------------------------------------------------------------

BRANCH_CORPUS = [
    "main", "phase/one", "feature/a-b_c.d", "a", "A/B/C", "x@y", "a@", "@a", "ü/ñ",
    "refs/heads/x", "heads/x", "a-", "x/HEAD", "FETCH_HEAD", "v1.2", "a.b/c.d", "a/b.c.lockx",
    "", "-", "-x", "--force", "a..b", "..", "a/../b", "a@{b", "@{-1}", "a.lock", "a/b.lock",
    "a.lock/b", ".a", "a/.b", "a.", "a/b.", "a/", "/a", "a//b", "a b", " a", "a\tb",
    "a\nb", "a\x7fb", "a\x01b", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "HEAD",
    "a/.lock", ".lock", "a..", "a/./b", "./a",
]  # fmt: skip


@pytest.mark.parametrize("name", BRANCH_CORPUS)
def test_branch_names_follow_git_check_ref_format(name: str, tmp_path: Path) -> None:
    real = subprocess.run(
        ["git", "check-ref-format", "--branch", name], cwd=tmp_path, capture_output=True,
        check=False,
    )  # fmt: skip
    try:
        validate_branch(name)
        ours = True
    except UsageError as exc:
        assert "\n" not in str(exc)
        ours = False
    assert ours == (real.returncode == 0), f"git says {real.returncode == 0} for {name!r}"


def test_branch_names_stricter_than_git() -> None:
    with pytest.raises(UsageError, match="reserved"):
        validate_branch("@")  # git accepts it outside a repository; it would mean HEAD
    with pytest.raises(UsageError, match="UTF-8"):
        validate_branch("a\udcffb")
    with pytest.raises(UsageError, match="must be text"):
        validate_branch(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:acme/widget.git",
        "github.com:acme/widget.git",
        "ssh://git@github.com/acme/widget.git",
        "https://github.com/acme/widget.git",
        "https://user@git.example.com/widget",
        "git://example.com/widget",
        "file:///srv/git/widget.git",
        "/srv/git/widget.git",
        "ssh://git@git.example.com:2222/widget.git",
        "ssh://git@[::1]:22/widget.git",
        "[::1]:widget.git",
        "git@[fe80::1]:widget.git",
    ],
)
def test_remote_urls_that_are_accepted(url: str) -> None:
    assert validate_remote_url(url) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "cannot be empty"),
        ("-uhelp", "cannot start with '-'"),
        ("--upload-pack=touch /tmp/x", "cannot start with '-'"),
        ("ext::sh -c touch% /tmp/pwned", "remote helpers"),
        ("fd::17", "remote helpers"),
        ("foo::bar", "remote helpers"),
        ("gopher://example.com/x", "scheme 'gopher'"),
        ("https://user:secret@example.com/x.git", "carries a password"),
        ("ssh://-oProxyCommand=x/y", "bad host"),
        ("https:///x", "bad host"),
        ("-oProxyCommand=x:y", "cannot start with '-'"),
        ("@:path", "bad host"),
        ("relative/path.git", "absolute path"),
        ("/srv/git\nx", "control characters"),
        ("/srv/git x", "spaces"),
        ("[-oProxyCommand=touch /tmp/pwned]:a", "spaces"),
        ("[-oProxyCommand=touch%20/tmp/pwned]:a", "brackets may hold only an IPv6"),
        ("[::1]", "must be followed by ':'"),
        ("ssh://-oProxyCommand=x@host/a", "not a plain name"),
        ("ssh://%2DoProxyCommand=x@host/a", "not a plain name"),
        ("git+ssh://[-oProxyCommand=x]/a", "bad host"),
        ("ssh://host:-1/a", "bad host or port"),
        ("-oProxyCommand=x@host:a", "cannot start with '-'"),
        ("git@-oProxyCommand=x:a", "bad host"),
        ("-@host:a", "cannot start with '-'"),
        ("a-@[-oX]:a", "brackets may hold only"),
        ("file://attacker/x.git", "cannot name a host"),
        ("ext::ssh -oProxyCommand=x h", "remote helpers"),
        ("EXT::x", "remote helpers"),
    ],
)
def test_remote_urls_that_are_refused(url: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as caught:
        validate_remote_url(url)
    assert "secret" not in str(caught.value)


def test_names_are_checked_before_git_runs(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    with pytest.raises(UsageError, match="invalid branch name '-f'"):
        ws.prepare("slot0", "-f", "main", [])
    with pytest.raises(UsageError, match="invalid branch name '--upload-pack=x'"):
        ws.prepare("slot0", "phase/four", "--upload-pack=x", [])
    bad_branch = PrerequisiteRef("p1", "-p1", prereqs["p1"].commit)
    with pytest.raises(UsageError, match="invalid branch name"):
        ws.prepare("slot0", "phase/four", "main", [bad_branch])
    with pytest.raises(UsageError, match="invalid branch name"):
        ws.remote_commit("--all")
    for slot in ("", "..", ".", "-x", "a/b", ".hidden", "x" * 65):
        with pytest.raises(UsageError, match="invalid slot name"):
            ws.prepare(slot, "phase/four", "main", [])
    assert not ws.root.exists()  # nothing ran


@pytest.mark.parametrize("commit", ["abc123", "HEAD", "-" + "a" * 39, "g" * 40, "a" * 41, ""])
def test_prerequisite_commits_must_be_full_ids(ws: Workspace, commit: str) -> None:
    with pytest.raises(UsageError, match="not a full commit id"):
        ws.prepare("slot0", "phase/four", "main", [PrerequisiteRef("p1", "phase/p1", commit)])


def test_an_upper_case_commit_id_is_accepted(
    ws: Workspace, prereqs: dict[str, PrerequisiteRef]
) -> None:
    shouting = PrerequisiteRef("p1", "phase/p1", prereqs["p1"].commit.upper())
    prepared = ws.prepare("slot0", "phase/four", "main", [shouting])
    assert prepared.merged[0]["commit"] == prereqs["p1"].commit


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"author_name": ""}, "author name"),
        ({"author_name": "a\nb"}, "author name"),
        ({"author_email": "<x@y>"}, "cannot contain '<'"),
        ({"timeout_s": 0}, "timeout must be positive"),
    ],
)
def test_workspace_settings_are_checked(
    tmp_path: Path, kwargs: dict[str, object], why: str
) -> None:
    settings: dict[str, object] = {"author_name": "a", "author_email": "a@b", **kwargs}
    with pytest.raises(UsageError, match=why):
        Workspace(tmp_path, "/srv/x.git", **settings)  # type: ignore[arg-type]


def _remote_hook(upstream: Upstream, name: str, script: str) -> None:
    hook = upstream.path / "hooks" / name
    hook.write_text("#!/bin/sh\n" + script)
    hook.chmod(0o755)


def test_a_push_the_remote_declines_is_a_git_error(ws: Workspace, upstream: Upstream) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    (prepared.path / "x.txt").write_text("x\n")
    ws.commit_all(prepared, "superagent: four")
    _remote_hook(upstream, "pre-receive", "echo 'policy: no pushes today' >&2\nexit 1\n")
    with pytest.raises(GitError, match=r"`git push` failed .*policy: no pushes today") as caught:
        ws.push(prepared)
    assert not isinstance(caught.value, PushRejected)
    assert upstream.tip("phase/four") is None


def test_a_push_the_remote_does_not_keep_is_a_git_error(ws: Workspace, upstream: Upstream) -> None:
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    (prepared.path / "x.txt").write_text("x\n")
    ws.commit_all(prepared, "superagent: four")
    main = upstream.tip("main")
    _remote_hook(upstream, "post-receive", f"git update-ref refs/heads/phase/four {main}\n")
    with pytest.raises(GitError, match=f"the remote reports {main}"):
        ws.push(prepared)


def test_a_leftover_clone_directory_is_replaced(ws: Workspace, upstream: Upstream) -> None:
    (ws.repo_path / "objects").mkdir(parents=True)  # no HEAD: not a finished clone
    prepared = ws.prepare("slot0", "phase/four", "main", [])
    assert prepared.base_commit == upstream.tip("main")
    assert not list(ws.root.glob(".repo-init-*"))


def test_git_in_a_missing_directory_is_not_found(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such directory"):
        ws._git("status", cwd=tmp_path / "missing")
