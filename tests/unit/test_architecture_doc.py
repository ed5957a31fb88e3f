"""docs/architecture.md stays in step with the code: every module under control/ is named in
its map, every path it names exists, and its seams table names the six seams."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
SEAMS = ("task", "response", "heartbeat", "inbox", "state DB", "event stream")


def _named(text: str) -> set[str]:
    """Every `control/...` path the page names in backticks."""
    return set(re.findall(r"`(control/[\w/.-]+)`", text))


def test_every_module_is_on_the_map() -> None:
    modules = {str(p.relative_to(REPO)) for p in (REPO / "control").rglob("*.py")}
    missing = sorted(modules - _named(DOC.read_text()))
    assert missing == [], f"modules not in docs/architecture.md: {missing}"


def test_the_map_names_nothing_that_does_not_exist() -> None:
    gone = sorted(p for p in _named(DOC.read_text()) if not (REPO / p).exists())
    assert gone == [], f"docs/architecture.md names what does not exist: {gone}"


def test_the_seams_table_names_every_seam() -> None:
    text = DOC.read_text()
    table = text.split("## Seams", 1)[1]
    rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")}
    assert set(SEAMS) <= rows, sorted(set(SEAMS) - rows)


def test_the_checks_catch_a_drift() -> None:
    # A page that forgets a module and names a moved one is caught by the same parsing.
    text = DOC.read_text().replace("`control/rpc.py`", "`control/worker/rpc.py`")
    named = _named(text)
    assert "control/rpc.py" not in named
    assert not (REPO / "control/worker/rpc.py").exists() and "control/worker/rpc.py" in named
