"""The escape corpus on a local worker (see tests/escape.py): every attempt of a hostile
agent is blocked, or detected with its phase failed; no canary, no leaked secret, no
process left behind, the worker alive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.escape import run_corpus, summary


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (make system-deps)")
def test_no_attempt_of_the_corpus_escapes(tmp_path: Path) -> None:
    verdicts = run_corpus(tmp_path)
    escaped = [f"{v.name}: {v.detail}" for v in verdicts if v.outcome == "escaped"]
    assert escaped == []
    by_name = {v.name: v for v in verdicts}
    committed = by_name["commit the API key in a file"]
    assert committed.outcome == "detected" and "leaked-config.py" in committed.detail
    assert "sk-ant" not in committed.detail
    assert summary(verdicts)["attempts"] == len(verdicts) >= 16
