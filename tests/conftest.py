"""Fixtures shared by every test: a controllable clock and real inbox files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control.queue import Queue


class Clock:
    """A clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
