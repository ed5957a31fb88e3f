"""One cgroup per container: with --keep-unit, containers started from one cgroup share
it and a unit's process list mixes hosts, so each nspawn starts from its own directory
(one under every mounted hierarchy), removed bottom-up after."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _cgroup_parents() -> list[Path]:
    """This process's cgroup directory in each mounted hierarchy."""
    mounts: dict[str, tuple[str, str]] = {}  # controllers -> (mount point, mount root)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, extra = pre.split(), post.split()
        if extra and extra[0] == "cgroup2":
            mounts[""] = (fields[4], fields[3])
        elif extra and extra[0] == "cgroup":
            options = {o for o in extra[2].split(",") if o not in ("rw", "ro")}
            named = sorted(o for o in options if o.startswith("name=") or "=" not in o)
            mounts[",".join(named)] = (fields[4], fields[3])
    parents = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        key = ",".join(sorted(controllers.split(","))) if controllers else ""
        if key not in mounts:
            continue
        point, root = mounts[key]
        relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
        parents.append(Path(point) / ("" if relative == "." else relative))
    return parents


def make_cgroups(name: str) -> list[Path]:
    made = []
    for parent in _cgroup_parents():
        directory = parent / "superagent-fleet" / name
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
            made.append(directory)
    return made


def remove_cgroups(name: str) -> None:
    for parent in _cgroup_parents():
        directory = parent / "superagent-fleet" / name
        if not directory.is_dir():
            continue
        # Bottom-up: a cgroup directory goes only once its children are gone.
        for sub in sorted(
            (p for p in directory.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        ):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            directory.rmdir()
        with contextlib.suppress(OSError):
            directory.parent.rmdir()
