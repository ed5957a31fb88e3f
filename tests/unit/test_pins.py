"""The pins live in control/pins.json only: no other file in the repository spells them,
and every reader (Python, the roles, the Makefile, the fake `claude`) gets its value there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from control import pins
from control.transport.base import DEFAULT_CONTROL, DEFAULT_REMOTE_QUEUE
from control.worker.agents.claude_code import PINNED_VERSION
from tests.fakes.agents import FAKE_BIN, FAKE_CLAUDE

REPO = Path(__file__).resolve().parents[2]
PINS_JSON = REPO / "control" / "pins.json"
# Files that are data, not something a person writes a pin into.
BINARY_SUFFIXES = {".png", ".gz", ".tgz", ".zst", ".db", ".sqlite"}


def _repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    files = [REPO / name for name in listed.split("\0") if name]
    return [f for f in files if f.is_file() and f.suffix not in BINARY_SUFFIXES]


def _spelled(value: str) -> re.Pattern[str]:
    """`value` as a whole token: 1.2.3 is found, 1.2.30 and 11.2.3 are not."""
    return re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w.])")


def _offenders(values: list[str], files: list[Path], *, skip_markdown: bool) -> list[str]:
    patterns = [_spelled(v) for v in values]
    found = []
    for path in files:
        if path == PINS_JSON or (skip_markdown and path.suffix == ".md"):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(p.search(line) for p in patterns):
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                found.append(f"{where}:{number}: {line.strip()}")
    return found


def test_no_other_file_spells_a_pinned_version() -> None:
    versions = [pins.NODE_VERSION, pins.NPM_VERSION, pins.CLAUDE_CODE_VERSION]
    for line in pins.PROFILES.values():
        versions += [line["node"]["version"], line["node"]["npm"], line["claude_code"]["version"]]
    assert _offenders(versions, _repository_files(), skip_markdown=False) == []


def test_no_code_spells_the_worker_paths() -> None:
    # The docs may show where things are on a worker; code and configuration read the file.
    paths = [pins.WORKER_QUEUE_DB, pins.WORKER_VENV]
    assert _offenders(paths, _repository_files(), skip_markdown=True) == []


def test_the_scan_finds_a_pin_written_elsewhere(tmp_path: Path) -> None:
    # The checks above can fail: a pin written into another file is found, a longer
    # version that merely contains it is not.
    stray = tmp_path / "group_vars.yml"
    stray.write_text(
        f"a: {pins.CLAUDE_CODE_VERSION}0\nclaude_code_version: {pins.CLAUDE_CODE_VERSION}\n"
    )
    found = _offenders([pins.CLAUDE_CODE_VERSION], [stray], skip_markdown=False)
    assert found == [f"group_vars.yml:2: claude_code_version: {pins.CLAUDE_CODE_VERSION}"]


def test_python_readers_take_the_file_values() -> None:
    data = json.loads(PINS_JSON.read_text())
    assert data["claude_code"]["version"] == PINNED_VERSION
    assert data["worker"]["queue_db"] == DEFAULT_REMOTE_QUEUE
    assert data["worker"]["venv"] + "/bin/control" == DEFAULT_CONTROL
    assert data["node"]["sha256"] == pins.NODE_SHA256


def test_the_fake_claude_claims_the_pin() -> None:
    done = subprocess.run([sys.executable, str(FAKE_CLAUDE), "--version"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == f"{pins.CLAUDE_CODE_VERSION} (Claude Code)"


def test_the_makefile_reads_the_pin() -> None:
    done = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "-pn", "help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"CLAUDE_CODE_PIN := {pins.CLAUDE_CODE_VERSION}" in done.stdout.splitlines()


def test_every_role_that_pins_reads_the_file() -> None:
    lookup = "'/control/pins.json'"
    for role in ("nodejs", "claude_code", "agent_clis", "worker"):
        defaults = (REPO / "roles" / role / "defaults" / "main.yml").read_text()
        private = f"__{role}_pins"
        assert lookup in yaml.safe_load(defaults)[private], role


def test_the_agent_clis_pins_reach_every_reader() -> None:
    """codex, gemini and opencode: their fakes, the worker role's pins (through the
    agent_clis role's catalog) and `make real-agents` all take control/pins.json `agents`."""
    agents = json.loads(PINS_JSON.read_text())["agents"]
    for name in agents:
        done = subprocess.run([sys.executable, str(FAKE_BIN / name), "--version"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        assert done.stdout.split()[-1] == agents[name]["version"]
    done = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "-pn", "help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    spelt = " ".join(f"{k}={v['package']}@{v['version']}" for k, v in agents.items())
    assert f"AGENT_PINS := {spelt}" in done.stdout.splitlines()
    template = (REPO / "roles" / "worker" / "templates" / "worker.toml.j2").read_text()
    assert "agent_clis_catalog[name].version" in template
