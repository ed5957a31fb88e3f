"""What a recording is: the upstream commits as changes, one per phase, and the error
that says why a history cannot become an example."""

from __future__ import annotations

from dataclasses import dataclass

from control.errors import SuperagentError

TEST_PREFIX = "python -m pytest -q -p no:cacheprovider"


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
