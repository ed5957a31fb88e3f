"""Helpers for tests that need something from the machine (root, a package, a tool).

Outside CI such a test skips with the reason; in CI (`CI` set) a missing need is a
failure, because CI is where the whole system must be shown to work.
"""

from __future__ import annotations

import os

import pytest


def need(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) unless `condition` holds."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"needed in CI: {reason}")
    pytest.skip(reason)
