"""The final check's commands: each distinct command once, each named test file once.

Phases name their verify commands independently: ten phases may each run the whole
suite, or the same runner on overlapping test files (`pytest tests/test_a.py` and
`pytest tests/test_a.py tests/test_b.py`). On the merged tree the final check runs

- each command once, compared by its words (quoting and spacing do not matter);
- one command per runner for commands that are the same runner with only test-file
  arguments at the end: the file sets are merged, a file (or a test of a file) named
  twice is run once.

Only plain commands are merged: one with shell syntax (operators, expansions,
globs, comments) is kept as written and only repeated copies of it are dropped, since
its words do not mean what they look like. What counts as a test file is a path with a
`test`/`tests`/`spec` directory or a `test_*`, `*_test`, `*.test.*`, `*.spec.*` name:
an option's value (`-c setup.cfg`, `--rootdir tests`) is never taken for one (a path
right after an option is its value, unless the option is a known flag such as `-q`).

A merged command remembers the commands it replaced (`parts`): when it fails, the
worker runs each of them alone to say which phases' checks fail
(`control.worker.integrate`), so merging never blurs the report. Nothing here runs or
reads anything: it is text in, text out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from control.messages import CheckResult, IntegrationCheck

# Anything that makes a command more than a list of words for the shell.
_SHELL = re.compile(r"[;&|<>()$`*?\[\]{}~!#\n]")
_TEST_DIR = re.compile(r"^(tests?|specs?|__tests__|testing)$")
_TEST_NAME = re.compile(r"^(test_.+|.+_tests?\.[A-Za-z0-9]+|.+\.(test|spec)\.[A-Za-z0-9]+)$")


# Options that never take a value: a test path after one of them is a test path.
FLAGS = frozenset(
    {"-q", "-qq", "-v", "-vv", "-vvv", "-x", "-s", "-l", "--quiet", "--verbose",
     "--exitfirst", "--no-header", "--color=no", "--"}
)  # fmt: skip


def plain_argv(command: str) -> list[str] | None:
    """The words of `command` when it is a plain list of words, quoted or not (no shell
    syntax): None for anything the shell would read otherwise."""
    if _SHELL.search(command):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words or None


def is_test_path(word: str) -> bool:
    """A test file, directory or test of a file (`tests/test_a.py::test_x`)."""
    if word.startswith("-") or "=" in word:
        return False
    path = word.split("::", 1)[0].rstrip("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return False
    return any(_TEST_DIR.match(p) for p in parts[:-1]) or bool(
        _TEST_DIR.match(parts[-1]) or _TEST_NAME.match(parts[-1])
    )


def split_runner(argv: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(runner, test files): the test paths at the end of `argv`, and what is before
    them. A path right after a bare option is that option's value, not a test file."""
    end = len(argv)
    start = end
    while start > 1 and is_test_path(argv[start - 1]):
        start -= 1
    before = argv[start - 1]
    if start < end and before.startswith("-") and "=" not in before and before not in FLAGS:
        start += 1  # `--rootdir tests`: the option's value stays with the runner
    return tuple(argv[:start]), tuple(argv[start:])


def _covered(path: str, by: Iterable[str]) -> bool:
    """Whether `path` (a file or `file::test`) is already run by one of `by`."""
    bare = path.split("::", 1)[0].rstrip("/")
    for other in by:
        if other == path:
            return True
        if "::" in other:
            continue
        root = other.rstrip("/")
        if bare == root or bare.startswith(root + "/"):
            return True
    return False


def distinct_checks(asked: Iterable[tuple[str, str]]) -> tuple[IntegrationCheck, ...]:
    """The checks of the final check from (phase, command) pairs in merge order: each
    in the order first asked, with every phase that asked for it."""
    groups: dict[tuple[str, ...], _Group] = {}
    for phase, command in asked:
        argv = plain_argv(command)
        files: tuple[str, ...] = ()
        if argv is None:
            key: tuple[str, ...] = ("", command.strip())  # shell syntax: as written
            runner = key
        else:
            runner, files = split_runner(argv)
            key = runner if files else (*runner, "")  # bare runners merge with nothing
        groups.setdefault(key, _Group(runner)).add(phase, command.strip(), files)
    return tuple(group.check() for group in groups.values())


class _Group:
    """Commands of one runner (or one identical command), merged."""

    def __init__(self, runner: tuple[str, ...]) -> None:
        self.runner = runner
        self.files: list[str] = []
        self.phases: list[str] = []
        self.parts: dict[str, list[str]] = {}  # each original command, and its phases

    def add(self, phase: str, command: str, files: tuple[str, ...]) -> None:
        if phase not in self.phases:
            self.phases.append(phase)
        normal = shlex.join((*self.runner, *files)) if self.runner[:1] != ("",) else command
        asking = self.parts.setdefault(normal, [])
        if phase not in asking:
            asking.append(phase)
        for path in files:
            if not _covered(path, self.files):
                # a directory or file now named covers the narrower paths named before
                self.files = [f for f in self.files if not _covered(f, [path])]
                self.files.append(path)

    def check(self) -> IntegrationCheck:
        if self.runner[:1] == ("",):
            return IntegrationCheck(self.runner[1], tuple(self.phases))
        command = shlex.join((*self.runner, *self.files))
        parts = tuple(IntegrationCheck(c, tuple(p)) for c, p in self.parts.items())
        if len(parts) == 1:
            return IntegrationCheck(parts[0].command, tuple(self.phases))
        return IntegrationCheck(command, tuple(self.phases), parts)


def failed_phases(results: Iterable[CheckResult]) -> tuple[str, ...]:
    """The phases whose checks fail: those asking for a failed command; for a merged
    command, those whose own commands (run alone after it failed) fail, or all of its
    phases when each passes alone (only the merged run fails)."""
    results = list(results)
    failed: set[str] = set()
    for merged in (r for r in results if r.part_of is None and not r.ok):
        alone = [r for r in results if r.part_of == merged.command]
        culprits = [r for r in alone if not r.ok]
        failed.update(p for r in (culprits or [merged]) for p in r.phases)
    return tuple(sorted(failed))
