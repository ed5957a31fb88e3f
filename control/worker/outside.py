"""Did the agent write beside its checkout? Snapshots of what surrounds a slot's checkout
in the worker's work directory, taken before and after the agent, compared.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from control.errors import UsageError

_WORKSPACE_MARK = "workspace.lock"  # the root of a git workspace (see control.git)

Entry = tuple[int, int, int]  # (mtime_ns, size, inode)
_LISTED: Entry = (0, 0, 0)  # a directory whose entries are in the snapshot themselves


@dataclass(frozen=True)
class Snapshot:
    """Names and mtimes of what sits around a checkout, to compare before and after."""

    checkout: Path
    entries: Mapping[str, Entry] = field(default_factory=dict)


def snapshot(work_root: Path, checkout: Path, *, ignore: Iterable[Path] = ()) -> Snapshot:
    """What is around `checkout`: the top two levels of `work_root` and the entries of
    each directory between the checkout and the work root (the checkout's parent at least).

    Left out, because other slots and git change them while an agent runs: the checkout,
    the directories beside it (other slots' checkouts), git directories, other git
    workspaces, and the `ignore` paths (logs, the inbox...).
    """
    checkout = Path(os.path.abspath(checkout))
    work_root = Path(os.path.abspath(work_root))
    skip = {checkout, *(Path(os.path.abspath(p)) for p in ignore)}
    ancestors = []
    parent = checkout.parent
    while True:
        ancestors.append(parent)
        if parent == work_root or not parent.is_relative_to(work_root) or parent == parent.parent:
            break
        parent = parent.parent
    entries: dict[str, Entry] = {}
    for directory in ancestors:
        _list(directory, entries, skip, ancestors, siblings=directory == checkout.parent)
    if work_root not in ancestors:
        _list(work_root, entries, skip, ancestors, siblings=False)
    for child in list(entries):
        path = Path(child)
        # One level further down the work root, in directories no slot manages.
        if (
            path.parent == work_root
            and path not in ancestors
            and path.is_dir()
            and not path.is_symlink()
            and not _managed(path)
        ):
            # Listed: its own mtime only repeats what its entries show.
            entries[child] = _LISTED
            _list(path, entries, skip, ancestors, siblings=False)
    return Snapshot(checkout=checkout, entries=entries)


def _managed(path: Path) -> bool:
    """A git directory or a git workspace: changed by git and other slots, not by agents."""
    git_dir = (path / "HEAD").is_file() and (path / "objects").is_dir()
    return git_dir or (path / _WORKSPACE_MARK).is_file()


def _list(
    directory: Path,
    entries: dict[str, Entry],
    skip: set[Path],
    ancestors: Sequence[Path],
    *,
    siblings: bool,
) -> None:
    try:
        children = list(os.scandir(directory))
    except OSError:
        return
    for child in children:
        path = Path(child.path)
        if path in skip or path in ancestors:
            continue
        try:
            is_dir = child.is_dir(follow_symlinks=False)
            if is_dir and (siblings or _managed(path)):
                continue  # beside the checkout, directories are other slots' checkouts
            info = child.stat(follow_symlinks=False)
        except OSError:
            continue  # gone while we looked
        entries[child.path] = (info.st_mtime_ns, info.st_size, info.st_ino)


def writes_outside(before: Snapshot, after: Snapshot) -> list[str]:
    """The paths created, changed or removed between two snapshots, sorted.

    A directory's own entry changes when something is created or removed inside it,
    so a write deeper than the snapshot looks shows as its directory.
    """
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
    checkout = before.checkout
    return sorted(p for p in changed if not Path(p).is_relative_to(checkout))
