"""A replay example from a real project's history: each upstream commit becomes one phase.

`python -m control.recording CLONE BASE LAST --name NAME` reads a local clone (nothing is
fetched) and writes, under specs/examples/: the spec NAME.json (one phase per first-parent
commit after BASE up to LAST; `depends_on` the earlier phases that touched the same files;
`verify` the upstream tests of the modules it touched), the recordings replay/NAME/<phase>/
(the upstream patch, byte for byte), the seed seed/NAME.tar.xz (upstream's tree at BASE) and
upstream/NAME/ (the upstream LICENSE, an attribution README and upstream.json, which names the
tree every run must end on). Before anything is written, the recording is replayed here as the
workers would: each phase on its branch with its prerequisites merged, its files checked against
upstream's and its verify run; then everything merged, the tree checked against upstream's at
LAST and the whole upstream suite run on it. A recording that fails any of that is not written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from control.errors import SuperagentError, UsageError
from control.treetar import import_tarball, tree_entries, tree_tarball

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "specs" / "examples"
TEST_PREFIX = "python -m pytest -q -p no:cacheprovider"
GIT_ID = ("-c", "user.name=superagent recording", "-c", "user.email=recording@superagent.local")
# How a clone's own settings could change the bytes a patch or a tree is made of.
_PLAIN_DIFF = (
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "color.ui=never",
)
_VERIFY_TIMEOUT_S = 600.0
LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENSE.rst", "COPYING")


class RecordingError(SuperagentError):
    """The history cannot become a replay example; the message says which commit and why."""


@dataclass(frozen=True)
class Change:
    """One first-parent upstream commit, as one phase."""

    commit: str
    parent: str
    tree: str
    subject: str
    message: str
    author: str
    date: str
    patch: bytes
    touched: tuple[str, ...]  # every path added, changed or deleted
    present: tuple[str, ...]  # the touched paths that exist after the commit
    phase: str = ""
    depends_on: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()


@dataclass
class Recording:
    """What `record` made, before it is written out."""

    name: str
    url: str
    license_file: str
    license_text: bytes
    base: str
    base_tree: str
    last: str
    last_tree: str
    seed: bytes
    changes: list[Change]
    skipped: list[str]
    test_command: str
    package: str
    tests_passed: int = 0


# -- git ------------------------------------------------------------------------------------


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["git", *GIT_ID, *_PLAIN_DIFF, "-C", str(repo), *args],
        input=data,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RecordingError(f"git {' '.join(args[:3])} in {repo}: {reason[-1] if reason else ''}")
    return done.stdout


def _text(repo: Path, *args: str) -> str:
    return _git(repo, *args).decode("utf-8", "replace").strip()


def _resolve(clone: Path, rev: str) -> str:
    try:
        return _text(clone, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RecordingError:
        raise UsageError(f"{rev!r} is not a commit of {clone}") from None


def _touched(clone: Path, parent: str, commit: str) -> tuple[list[str], list[str]]:
    out = _git(clone, "diff", "--name-status", "--no-renames", "-z", parent, commit)
    fields = [f.decode("utf-8", "surrogateescape") for f in out.split(b"\0") if f]
    touched, present = [], []
    for status, path in zip(fields[::2], fields[1::2], strict=True):
        touched.append(path)
        if status != "D":
            present.append(path)
    return touched, present


# -- phases ---------------------------------------------------------------------------------


def phase_id(index: int, subject: str) -> str:
    """`03-fix-split-maxsplit-zero`: the order, then the subject's words, as a slug."""
    words = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")
    slug = f"{index:02d}-{words}"[:48].rstrip("-")
    return slug if len(slug) > 3 else f"{index:02d}-commit"


def verify_commands(
    change: Change, files_after: Iterable[str], package: str, tests: str, suite: str
) -> tuple[str, ...]:
    """The upstream tests of what `change` touched: per module of `package` touched (or
    whose tests were touched), one command running its doctests and its test files; the
    whole `suite` when a shared test file changed or nothing touched has tests of its own."""
    files = set(files_after)
    modules = {PurePosixPath(f).stem for f in files if _module_of(f, package)}
    wanted: set[str] = set()
    loose: set[str] = set()
    whole = False
    for path in change.touched:
        pure = PurePosixPath(path)
        if _module_of(path, package) and pure.stem in modules:
            wanted.add(pure.stem)
        elif pure.parent == PurePosixPath(tests) and _is_test(pure.name):
            owner = _owner(pure.stem, modules)
            if owner is None:
                if path in files:
                    loose.add(path)
            else:
                wanted.add(owner)
        elif pure.parts[: len(PurePosixPath(tests).parts)] == PurePosixPath(tests).parts:
            whole = True  # a conftest or a data file: any test may read it
    commands = []
    for module in sorted(wanted):
        own_tests = sorted(
            f
            for f in files
            if PurePosixPath(f).parent == PurePosixPath(tests)
            and _is_test(PurePosixPath(f).name)
            and _owner(PurePosixPath(f).stem, modules) == module
        )
        targets = [f"{package}/{module}.py", *own_tests]
        commands.append(f"{TEST_PREFIX} --doctest-modules {' '.join(targets)}")
    commands += [f"{TEST_PREFIX} {path}" for path in sorted(loose)]
    if whole or not commands:
        return (suite,)
    return tuple(commands)


def _module_of(path: str, package: str) -> bool:
    pure = PurePosixPath(path)
    return (
        pure.parent == PurePosixPath(package) and pure.suffix == ".py" and pure.stem != "__init__"
    )


def _is_test(name: str) -> bool:
    return name.startswith("test_") and name.endswith(".py")


def _owner(test_stem: str, modules: set[str]) -> str | None:
    """The module a test file is for: test_<module>.py or test_<module>_<more>.py, the
    longest such module name winning."""
    name = test_stem.removeprefix("test_")
    owners = [m for m in modules if name == m or name.startswith(f"{m}_")]
    return max(owners, key=len) if owners else None


# -- making the recording -----------------------------------------------------------------


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
    base, last = _resolve(clone, base_rev), _resolve(clone, last_rev)
    commits = _text(clone, "rev-list", "--first-parent", "--reverse", f"{base}..{last}").split()
    if not commits:
        raise UsageError(f"no commit after {base_rev} up to {last_rev}")
    first_parent = _text(clone, "rev-parse", f"{commits[0]}^1")
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
        parent = _text(clone, "rev-parse", f"{commit}^1")
        patch = _git(clone, "diff", "--binary", "--full-index", "--no-renames", parent, commit)
        info = _text(clone, "show", "-s", "--format=%an%x00%aI%x00%s", commit).split("\0")
        if not patch:
            skipped.append(commit)  # an empty step (a release tag's commit): no phase to run
            continue
        touched, present = _touched(clone, parent, commit)
        if not present:
            raise RecordingError(
                f"{commit[:12]} ({info[2]}) only deletes files: a phase needs a deliverable"
            )
        change = Change(
            commit=commit,
            parent=parent,
            tree=_text(clone, "rev-parse", f"{commit}^{{tree}}"),
            subject=info[2],
            message=_text(clone, "show", "-s", "--format=%B", commit),
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
        license_text=_git(clone, "cat-file", "blob", f"{last}:{license_file}"),
        base=base,
        base_tree=_text(clone, "rev-parse", f"{base}^{{tree}}"),
        last=last,
        last_tree=_text(clone, "rev-parse", f"{last}^{{tree}}"),
        seed=tree_tarball(clone, base),
        changes=changes,
        skipped=skipped,
        test_command=suite,
        package=package,
    )


def spec_of(recording: Recording) -> dict[str, Any]:
    """The spec: one phase per change, the commit message as its task."""
    phases = []
    for change in recording.changes:
        phase: dict[str, Any] = {
            "id": change.phase,
            "title": f"{change.commit[:7]} {change.subject}"[:200],
            "task": f"{change.message}\n\n(upstream commit {change.commit} by {change.author}, "
            f"{change.date})",
            "deliverables": list(change.present),
            "verify": list(change.verify),
        }
        if change.depends_on:
            phase["depends_on"] = list(change.depends_on)
        phases.append(phase)
    return {
        "$schema": "../schema/spec.schema.json",
        "version": 1,
        "name": recording.name,
        "description": (
            f"{len(recording.changes)} consecutive commits of {recording.url}, one phase each "
            f"({recording.base[:12]}..{recording.last[:12]}); replayed from "
            f"replay/{recording.name}/, see upstream/{recording.name}/README.md"
        ),
        "repo": {
            "url": f"git@git.example.com:upstream/{recording.name}.git",
            "base_branch": "main",
            "branch_prefix": "superagent",
        },
        "defaults": {"estimate_minutes": 1, "timeout_minutes": 10, "max_attempts": 2},
        "phases": phases,
    }


def manifest_of(recording: Recording) -> dict[str, Any]:
    """upstream.json: where it came from, and the trees a replay must land on."""
    return {
        "project": recording.name,
        "url": recording.url,
        "license_file": recording.license_file,
        "base": {"commit": recording.base, "tree": recording.base_tree},
        "last": {"commit": recording.last, "tree": recording.last_tree},
        "test_command": recording.test_command,
        "tests_passed": recording.tests_passed,
        "phases": [{"id": c.phase, "commit": c.commit, "tree": c.tree} for c in recording.changes],
        "skipped_empty_commits": recording.skipped,
    }


# -- checking it as the workers will run it --------------------------------------------------


def verify_env() -> dict[str, str]:
    """How the checks run here: this interpreter first on PATH, no pytest plugins of ours
    (the upstream suite asks for none), no bytecode left in the tree."""
    bin_dir = Path(sys.executable).parent
    return dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONDONTWRITEBYTECODE="1",
    )


def run_check(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=verify_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_VERIFY_TIMEOUT_S,
        check=False,
    )


def passed_count(output: str) -> int:
    """The `N passed` of pytest's last line (0 when it ran none)."""
    found = re.findall(r"(\d+) passed", output)
    return int(found[-1]) if found else 0


def check(recording: Recording, clone: Path, work: Path) -> None:
    """Replay `recording` in `work` as the workers and the final check will; RecordingError
    names the first phase whose files, checks or merge differ from upstream's."""
    repo = work / "replay"
    _git(work, "init", "--quiet", "-b", "main", str(repo))
    seed = work / "seed.tar.xz"
    seed.write_bytes(recording.seed)
    if import_tarball(repo, seed, "main", "seed") != recording.base_tree:
        raise RecordingError("the seed tarball does not hold upstream's tree at the base")
    _git(repo, "checkout", "--quiet", "main")
    for change in recording.changes:
        where = f"{change.phase} ({change.commit[:12]})"
        _git(repo, "checkout", "--quiet", "-B", f"superagent/{change.phase}", "main")
        for dep in change.depends_on:
            _git(repo, "merge", "--no-ff", "--no-edit", "--quiet", f"superagent/{dep}")
        patch = work / "phase.patch"
        patch.write_bytes(change.patch)
        _git(repo, "apply", "--", str(patch))
        _git(repo, "add", "--all", "--", ".")
        _git(repo, "commit", "--quiet", "--allow-empty", "-m", change.phase)
        ours = _git(repo, "ls-tree", "-r", "HEAD", "--", *change.touched)
        theirs = _git(clone, "ls-tree", "-r", change.commit, "--", *change.touched)
        if ours != theirs:
            raise RecordingError(f"{where}: the replayed files differ from upstream's")
        for command in change.verify:
            done = run_check(command, repo)
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
                raise RecordingError(
                    f"{where}: `{command}` fails on the phase's tree "
                    f"(exit {done.returncode}: {' '.join(tail)})"
                )
        _git(repo, "clean", "-fdxq")
    _git(repo, "checkout", "--quiet", "-B", "integration", "main")
    for change in recording.changes:
        _git(repo, "merge", "--no-ff", "--no-edit", "--quiet", f"superagent/{change.phase}")
    if _text(repo, "rev-parse", "HEAD^{tree}") != recording.last_tree:
        raise RecordingError(f"the merged phases do not make upstream's tree at {recording.last}")
    done = run_check(recording.test_command, repo)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:]
        raise RecordingError(f"upstream's suite fails on the merged tree: {' '.join(tail)}")
    recording.tests_passed = passed_count(done.stdout)


# -- writing it out -------------------------------------------------------------------------


def attribution(recording: Recording) -> str:
    first, count = recording.changes[0], len(recording.changes)
    return (
        f"# {recording.name}: a replay example from upstream history\n\n"
        f"The spec `../../{recording.name}.json`, the recordings `../../replay/{recording.name}/`"
        f" and the seed `../../seed/{recording.name}.tar.xz` are made from {recording.url}:\n"
        f"its tree at `{recording.base}` (the seed) and its {count} first-parent commits from "
        f"`{first.commit}` to `{recording.last}`, each one phase whose recording is the "
        "upstream patch, byte for byte. The upstream code is the work of its authors, under "
        f"the license in `{recording.license_file}` here (copied from upstream at "
        f"`{recording.last[:12]}`); each phase's task names its commit and author.\n\n"
        "Made by `control/recording.py` from a local clone; to make it again (see "
        'docs/specs.md, "A replay example from a project\'s history"):\n\n'
        "```\n"
        f".venv/bin/python -m control.recording CLONE {recording.base[:12]} "
        f"{recording.last[:12]} --name {recording.name} --url {recording.url} "
        f"--package {recording.package}\n"
        "```\n"
    )


def write(recording: Recording, examples: Path) -> list[Path]:
    """Write the example under `examples`, replacing an earlier one of the same name;
    everything is staged beside its destination first, so a failure leaves the old one."""
    name = recording.name
    targets: dict[Path, str | bytes | Mapping[str, Any]] = {
        examples / f"{name}.json": json.dumps(spec_of(recording), indent=2) + "\n",
        examples / "seed" / f"{name}.tar.xz": recording.seed,
        examples / "replay" / name: {
            c.phase: {
                f"{c.phase}.patch": c.patch,
                "summary.txt": f"replayed upstream {c.commit[:12]} by {c.author}: {c.subject}\n",
            }
            for c in recording.changes
        },
        examples / "upstream" / name: {
            recording.license_file: recording.license_text,
            "README.md": attribution(recording),
            "upstream.json": json.dumps(manifest_of(recording), indent=2) + "\n",
        },
    }
    staged: list[tuple[Path, Path]] = []
    try:
        for target, content in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            _write_into(stage / "x", content)
            staged.append((stage / "x", target))
        for source, target in staged:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            source.rename(target)
    finally:
        for source, _ in staged:
            shutil.rmtree(source.parent, ignore_errors=True)
    return list(targets)


def _write_into(path: Path, content: str | bytes | Mapping[str, Any]) -> None:
    if isinstance(content, Mapping):
        path.mkdir()
        for key, value in content.items():
            _write_into(path / key, value)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


# -- the command ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m control.recording",
        description="Make a replay example (spec, recordings, seed) from a local clone's history.",
    )
    parser.add_argument("clone", type=Path, help="a local git clone of the project")
    parser.add_argument("base", help="the commit the seed is made of (not replayed)")
    parser.add_argument("last", help="the last commit replayed (first-parent line from base)")
    parser.add_argument("--name", required=True, help="the example's name (spec, directories)")
    parser.add_argument("--url", required=True, help="the upstream URL, for the attribution")
    parser.add_argument("--package", required=True, help="the package directory (boltons)")
    parser.add_argument("--tests", default="tests", help="the test directory (tests)")
    parser.add_argument("--examples", type=Path, default=EXAMPLES, help="where to write it")
    args = parser.parse_args(argv)
    try:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", args.name):
            raise UsageError(f"--name {args.name!r}: lowercase letters, digits and '-'")
        recording = record(
            args.clone.resolve(),
            args.base,
            args.last,
            name=args.name,
            url=args.url,
            package=args.package,
            tests=args.tests,
        )
        with tempfile.TemporaryDirectory(prefix="superagent-recording-") as tmp:
            check(recording, args.clone.resolve(), Path(tmp))
        written = write(recording, args.examples)
    except SuperagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    for path in written:
        print(f"wrote {path}")
    print(
        f"{len(recording.changes)} phases, {len(recording.skipped)} empty commit(s) skipped; "
        f"the merged tree is upstream's {recording.last_tree[:12]}, "
        f"{recording.tests_passed} upstream tests pass on it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
