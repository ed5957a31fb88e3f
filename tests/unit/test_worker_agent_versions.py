"""The worker's check covers every agent CLI pinned on its host, as it does Claude Code,
and reports the unpinned ones it finds (the scheduler matches phases to them)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from control.pins import load
from control.worker.checks import installed, run_checks
from control.worker.config import Pins, default_config
from tests.fakes.agents import FAKE_BIN

AGENTS = load()["agents"]


def test_pinned_agent_clis_report_their_versions_and_a_mismatch_refuses_work(
    tmp_path: Path,
) -> None:
    config = replace(
        default_config(tmp_path / "home", "w1"),
        codex=str(FAKE_BIN / "codex"),
        gemini=str(FAKE_BIN / "gemini"),
        pins=Pins(codex=AGENTS["codex"]["version"], gemini="9.9.9"),
    )
    report = run_checks(config)
    assert report.versions["codex"] == AGENTS["codex"]["version"]  # "codex-cli X": word 2
    assert report.versions["gemini"] == AGENTS["gemini"]["version"]
    # Not pinned here: reported (found or None) for the scheduler, never held to a pin.
    assert "opencode" in report.versions
    assert not [p for p in report.problems if p.startswith("opencode")]
    assert f"gemini is {AGENTS['gemini']['version']}, pinned 9.9.9" in report.problems
    assert not [p for p in report.problems if p.startswith("codex")]


def test_a_pinned_agent_cli_that_is_missing_refuses_work(tmp_path: Path) -> None:
    config = replace(
        default_config(tmp_path / "home", "w1"),
        opencode=str(tmp_path / "nowhere" / "opencode"),
        pins=Pins(opencode=AGENTS["opencode"]["version"]),
    )
    report = run_checks(config)
    assert report.versions["opencode"] is None
    assert any(p.startswith(f"opencode is pinned to {AGENTS['opencode']['version']} but")
               for p in report.problems)  # fmt: skip


def test_reinstalling_an_agent_cli_changes_the_fingerprint(tmp_path: Path) -> None:
    binary = tmp_path / "bin" / "codex"
    binary.parent.mkdir()
    shutil.copy(FAKE_BIN / "agent-cli", binary)
    config = replace(
        default_config(tmp_path / "home", "w1"),
        codex=str(binary),
        pins=Pins(codex=AGENTS["codex"]["version"]),
    )
    before = installed(config)
    binary.write_text(binary.read_text() + "\n# another build\n")
    assert installed(config) != before


def test_an_unpinned_agent_cli_is_reported_when_found_and_none_when_not(tmp_path: Path) -> None:
    config = replace(
        default_config(tmp_path / "home", "w1"),
        codex=str(FAKE_BIN / "codex"),
        gemini=str(tmp_path / "nowhere" / "gemini"),
    )
    report = run_checks(config)
    assert report.versions["codex"] == AGENTS["codex"]["version"]
    assert report.versions["gemini"] is None
    assert not [p for p in report.problems if p.startswith(("codex", "gemini"))]
    before = installed(config)  # installing one under a running worker is noticed
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "gemini").symlink_to(FAKE_BIN / "gemini")
    assert installed(config) != before
