"""A clone's first-parent history read into a `Recording`: one change per commit, what
each touched, which earlier phases it depends on, the seed and the license."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from control.errors import UsageError
from control.recording.gitcmd import changed_paths, git, resolve, text
from control.recording.model import TEST_PREFIX, Change, Recording, RecordingError
from control.recording.phases import phase_id, verify_commands
from control.treetar import tree_entries, tree_tarball

LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENSE.rst", "COPYING")


def record(
    clone: Path,
    base_rev: str,
    last_rev: str,
    *,
    name: str,
    url: str,
    package: str,
    tests: str = "tests",
) -> Recording:
    """Read the first-parent commits after `base_rev` up to `last_rev` of `clone`."""
    if not (clone / ".git").exists() and not (clone / "HEAD").is_file():
        raise UsageError(f"{clone} is not a git clone")
    base, last = resolve(clone, base_rev), resolve(clone, last_rev)
    commits = text(clone, "rev-list", "--first-parent", "--reverse", f"{base}..{last}").split()
    if not commits:
        raise UsageError(f"no commit after {base_rev} up to {last_rev}")
    first_parent = text(clone, "rev-parse", f"{commits[0]}^1")
    if first_parent != base:
        raise UsageError(
            f"{base_rev} is not on the first-parent line of {last_rev} "
            f"(the line leaves it at {first_parent[:12]})"
        )
    suite = f"{TEST_PREFIX} --doctest-modules {package} {tests}"
    changes: list[Change] = []
    skipped: list[str] = []
    last_toucher: dict[str, str] = {}
    for commit in commits:
        parent = text(clone, "rev-parse", f"{commit}^1")
        patch = git(clone, "diff", "--binary", "--full-index", "--no-renames", parent, commit)
        info = text(clone, "show", "-s", "--format=%an%x00%aI%x00%s", commit).split("\0")
        if not patch:
            skipped.append(commit)  # an empty step (a release tag's commit): no phase to run
            continue
        touched, present = changed_paths(clone, parent, commit)
        if not present:
            raise RecordingError(
                f"{commit[:12]} ({info[2]}) only deletes files: a phase needs a deliverable"
            )
        change = Change(
            commit=commit,
            parent=parent,
            tree=text(clone, "rev-parse", f"{commit}^{{tree}}"),
            subject=info[2],
            message=text(clone, "show", "-s", "--format=%B", commit),
            author=info[0],
            date=info[1],
            patch=patch,
            touched=tuple(touched),
            present=tuple(present),
            phase=phase_id(len(changes) + 1, info[2]),
        )
        after = [e[3] for e in tree_entries(clone, commit)]
        deps = sorted({last_toucher[p] for p in touched if p in last_toucher})
        order = {c.phase: i for i, c in enumerate(changes)}
        change = replace(
            change,
            depends_on=tuple(sorted(deps, key=order.__getitem__)),
            verify=verify_commands(change, after, package, tests, suite),
        )
        for path in touched:
            last_toucher[path] = change.phase
        changes.append(change)
    if not changes:
        raise UsageError(f"every commit after {base_rev} up to {last_rev} is empty")
    license_file = next(
        (n for n in LICENSE_NAMES if any(e[3] == n for e in tree_entries(clone, last))), None
    )
    if license_file is None:
        raise UsageError(
            f"{last_rev} has no license file at its root ({', '.join(LICENSE_NAMES)}); "
            "only a permissively licensed project may become an example"
        )
    return Recording(
        name=name,
        url=url,
        license_file=license_file,
        license_text=git(clone, "cat-file", "blob", f"{last}:{license_file}"),
        base=base,
        base_tree=text(clone, "rev-parse", f"{base}^{{tree}}"),
        last=last,
        last_tree=text(clone, "rev-parse", f"{last}^{{tree}}"),
        seed=tree_tarball(clone, base),
        changes=changes,
        skipped=skipped,
        test_command=suite,
        package=package,
    )
