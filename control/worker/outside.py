"""Did the agent write beside its checkout? On a trusted host (no sandbox) the worker
snapshots its whole work directory, at any depth, and the worker's own sensitive files
(`~/.ssh`, shell start-up files, git config) before and after the agent, and compares.

Left out are only the parts other slots and git change while an agent runs; inside a git
directory, what makes git behave differently (config, hooks, info/, alternates, new files)
is still watched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from control.errors import UsageError

_WORKSPACE_MARK = "workspace.lock"  # the root of a git workspace (see control.git)
_SLOTS = "slots"  # a workspace's slot checkouts (see control.git.Workspace)

Entry = tuple[int, int, int]  # (mtime_ns, size, inode)
_LISTED: Entry = (0, 0, 0)  # a directory whose entries are in the snapshot themselves

# In a git directory, what git itself changes while a slot fetches, commits, adds a
# worktree or collects garbage (a worktree's config.worktree is never honoured: see
# control.git.runner); everything else there (config, hooks, info/, any new file,
# objects/info/alternates) is watched.
_GIT_CHURN = frozenset(
    {"HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "MERGE_RR",
     "AUTO_MERGE", "CHERRY_PICK_HEAD", "REVERT_HEAD", "COMMIT_EDITMSG", "index",
     "packed-refs", "shallow", "gc.log", "gc.pid", "refs", "logs", "rr-cache", "worktrees"}
)  # fmt: skip
_GIT_WATCHED_IN = {
    "objects": frozenset({"info"}),  # objects/info/alternates borrows another store
    "objects/info": frozenset({"alternates", "http-alternates"}),
}

# In the worker's home, what would run code or let someone in later.
HOME_SENSITIVE = (
    ".ssh", ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile",
    ".zshrc", ".zshenv", ".zprofile", ".pam_environment", ".gitconfig", ".config/git",
    ".config/systemd", ".config/autostart", ".config/environment.d",
)  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """Names and mtimes of what sits around a checkout, to compare before and after."""

    checkout: Path
    entries: Mapping[str, Entry] = field(default_factory=dict)
    # The git workspaces that existed: one another slot creates meanwhile is not a write.
    workspaces: frozenset[str] = frozenset()


def snapshot(
    work_root: Path, checkout: Path, *, ignore: Iterable[Path] = (), also: Iterable[Path] = ()
) -> Snapshot:
    """Everything under `work_root` at any depth, the directory holding `checkout`, and
    the `also` paths (files, or directories at any depth).

    Left out, because other slots and git change them while an agent runs: the checkout,
    the directories beside it and every workspace's slot checkouts (other slots' work),
    git's moving parts inside git directories (objects, refs, logs, worktrees' state),
    and the `ignore` paths (logs, scratch directories...).
    """
    checkout = Path(os.path.abspath(checkout))
    walker = _Walker(checkout, {checkout, *(Path(os.path.abspath(p)) for p in ignore)})
    walker.walk(Path(os.path.abspath(work_root)))
    if not checkout.parent.is_relative_to(os.path.abspath(work_root)):
        walker.walk(checkout.parent)
    for path in also:
        walker.walk(Path(os.path.abspath(path)), top=True)
    return Snapshot(
        checkout=checkout, entries=walker.entries, workspaces=frozenset(walker.workspaces)
    )


class _Walker:
    """One snapshot's walk: an explicit stack (no recursion limit), lstat only."""

    def __init__(self, checkout: Path, skip: set[Path]) -> None:
        self.checkout = checkout
        self.skip = skip
        self.entries: dict[str, Entry] = {}
        self.workspaces: set[str] = set()
        self.seen: set[Path] = set()

    def walk(self, root: Path, *, top: bool = False) -> None:
        if top and not self._top(root):
            return
        stack: list[tuple[Path, Path | None, str]] = [(root, None, "")]
        while stack:
            directory, git_dir, inside = stack.pop()
            if directory in self.seen:
                continue
            self.seen.add(directory)
            if git_dir is None and _is_git_dir(directory):
                git_dir, inside = directory, ""
            if git_dir is None and (directory / _WORKSPACE_MARK).is_file():
                self.workspaces.add(str(directory))
            try:
                children = list(os.scandir(directory))
            except OSError:
                continue  # gone or unreadable while we looked
            for child in children:
                if git_dir is not None and not _git_watched(inside, child.name):
                    continue
                if self._record(directory, child):
                    # `inside`: where in the git directory (only read within one)
                    below = f"{inside}/{child.name}" if inside else child.name
                    stack.append((Path(child.path), git_dir, below if git_dir else ""))

    def _top(self, root: Path) -> bool:
        """An `also` path itself: recorded; True when it is a directory to walk."""
        try:
            info = root.lstat()
        except OSError:
            return False  # absent: its creation shows as a new entry
        if not root.is_dir() or root.is_symlink():
            self.entries[str(root)] = (info.st_mtime_ns, info.st_size, info.st_ino)
            return False
        self.entries[str(root)] = _LISTED
        return True

    def _record(self, directory: Path, child: os.DirEntry[str]) -> bool:
        """Record one entry; True when it is a directory to walk."""
        path = Path(child.path)
        if path in self.skip:
            return False
        try:
            is_dir = child.is_dir(follow_symlinks=False)
            if is_dir and self._other_slot(directory):
                return False
            info = child.stat(follow_symlinks=False)
        except OSError:
            return False  # gone while we looked
        if is_dir:
            # Listed: its own mtime only repeats what its entries show.
            self.entries[child.path] = _LISTED
            return True
        self.entries[child.path] = (info.st_mtime_ns, info.st_size, info.st_ino)
        return False

    def _other_slot(self, directory: Path) -> bool:
        """A directory beside the checkout, or a slot of any workspace: another slot's
        checkout, which its own agent changes."""
        if directory == self.checkout.parent:
            return True
        return directory.name == _SLOTS and (directory.parent / _WORKSPACE_MARK).is_file()


def _is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _git_watched(inside: str, name: str) -> bool:
    """Whether `name`, in the git directory's subdirectory `inside`, is watched."""
    if name.endswith(".lock"):
        return False
    if inside == "":
        return name not in _GIT_CHURN
    if inside in _GIT_WATCHED_IN:
        return name in _GIT_WATCHED_IN[inside]
    return inside.split("/", 1)[0] != "objects"  # hooks/, info/, anything new, at any depth


def writes_outside(before: Snapshot, after: Snapshot) -> list[str]:
    """The paths created, changed or removed between two snapshots, sorted."""
    if before.checkout != after.checkout:
        raise UsageError(
            f"snapshots of different checkouts ({before.checkout}, {after.checkout}) "
            "cannot be compared"
        )
    changed = {
        path
        for path in before.entries.keys() | after.entries.keys()
        if before.entries.get(path) != after.entries.get(path)
    }
    # A workspace another slot created meanwhile (and the directories made for it) is
    # git's doing, not this agent's.
    created = [Path(w) for w in after.workspaces - before.workspaces]
    checkout = before.checkout
    return sorted(
        p
        for p in changed
        if not Path(p).is_relative_to(checkout)
        and not any(
            Path(p).is_relative_to(w) or (w.is_relative_to(p) and p not in before.entries)
            for w in created
        )
    )
