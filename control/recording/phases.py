"""Each change as a phase: its id, and the upstream tests that check it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from control.recording.model import TEST_PREFIX, Change


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
