"""Fixtures shared by every test: a controllable clock and real inbox files, and a
superagent home of the session's own."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.queue import Queue

_HOME = pytest.StashKey[tuple[str, str | None]]()


class Clock:
    """A clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pytest_configure(config: pytest.Config) -> None:
    """Every command a test runs without `--state` (or `--db`) would use the user's own
    state and inbox (~/.local/share/superagent): a test must never read or write those,
    and another checkout's tests (of a newer schema) must not break this one's. Set in
    the environment before any test module is imported (help texts show the default),
    so the `control` processes the tests start inherit it too."""
    home = tempfile.mkdtemp(prefix="superagent-test-home-")
    config.stash[_HOME] = (home, os.environ.get("SUPERAGENT_HOME"))
    os.environ["SUPERAGENT_HOME"] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home, before = config.stash[_HOME]
    shutil.rmtree(home, ignore_errors=True)
    if before is None:
        os.environ.pop("SUPERAGENT_HOME", None)
    else:
        os.environ["SUPERAGENT_HOME"] = before


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inbox_path(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


@pytest.fixture
def queue(inbox_path: Path, clock: Clock) -> Iterator[Queue]:
    with Queue(inbox_path, clock=clock) as q:
        yield q
