"""Every command block of README.md and docs/*.md runs as written, so the docs cannot drift.

The convention, for whoever writes docs:

- A fenced block whose info string is `sh` (or `bash`, `shell`) is commands. Each line
  is one command run with `bash -e -o pipefail` (a trailing `\\` joins the next line); a
  line that starts with `#` is a comment, except that `# {...}` right after a command is
  its expected output as JSON, compared with what the command printed. Blocks of any
  other language (json, yaml, toml, python, none) are not run.
- A block that cannot run here (real hosts, provisioning, the network, the whole test
  suite) says so on the line just above its fence, with the reason:

      <!-- doc-test: skip: needs real hosts (make provision) -->

  and is reported as skipped with that reason. Nothing else is needed: every other block
  must pass.
- Blocks run in document order, one shared sandbox per file: a scratch directory holding
  `specs/` and, as `inventory/example`, the demo's local fleet (the example's own host
  names: server, laptop, wsl; real `control worker run` processes). The example specs'
  repository URLs lead (git's `insteadOf`, in GIT_CONFIG_GLOBAL) to seeded bare remotes,
  `control` is on PATH, `SUPERAGENT_HOME` is the sandbox, and the agent is the replay
  agent with the examples' recordings (`SUPERAGENT_AGENT`, `SUPERAGENT_REPLAY_DIR`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from control.demo import EXAMPLES, example_fleet, example_specs, seed_of, seed_remote
from control.localfleet import LocalFleet
from control.spec import read_spec_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("sh", "bash", "shell")
SKIP = re.compile(r"<!--\s*doc-test:\s*skip:\s*(.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    commands: tuple[tuple[str, str | None], ...]  # (command, expected JSON output or None)
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.doc.name}:{self.line}"


def blocks_of(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1
        if fence.group(1) not in SHELLS:
            continue
        above = next((line for line in reversed(lines[:start]) if line.strip()), "")
        skip = SKIP.search(above)
        found.append(Block(doc, start + 1, _commands(body), skip.group(1) if skip else None))
    return found


def _commands(body: list[str]) -> tuple[tuple[str, str | None], ...]:
    commands: list[tuple[str, str | None]] = []
    pending = ""
    for raw in body:
        line = raw.strip()
        if pending:
            line, pending = pending + " " + line, ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        if not line:
            continue
        if line.startswith("#"):
            text = line[1:].strip()
            if commands and commands[-1][1] is None and text.startswith("{"):
                commands[-1] = (commands[-1][0], text)
            continue
        commands.append((line, None))
    return tuple(commands)


ALL_BLOCKS = [b for doc in DOCS for b in blocks_of(doc)]


def test_the_docs_have_command_blocks_and_most_run() -> None:
    assert len(ALL_BLOCKS) >= 5
    assert sum(b.skip is None for b in ALL_BLOCKS) >= 3


# -- the sandbox -----------------------------------------------------------------------


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]
    fleet: LocalFleet


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "specs", root / "specs")
    rewrites: dict[str, str] = {}
    replay = root / "replay"
    replay.mkdir()
    for name in example_specs():
        remote = root / "remotes" / f"{name}.git"
        seed_remote(remote, seed_of(name))
        rewrites[str(read_spec_file(EXAMPLES / f"{name}.json")["repo"]["url"])] = str(remote)
        for phase in (EXAMPLES / "replay" / name).iterdir():
            (replay / phase.name).symlink_to(phase)
    # The workers' git keeps GIT_CONFIG_GLOBAL (and drops other GIT_* variables).
    gitconfig = root / "gitconfig"
    gitconfig.write_text(
        "".join(f'[url "{remote}"]\n\tinsteadOf = {url}\n' for url, remote in rewrites.items())
    )
    git = {"GIT_CONFIG_GLOBAL": str(gitconfig)}
    fleet = example_fleet(root / "fleet", env={**git, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    (root / "inventory").mkdir()
    (root / "inventory" / "example").symlink_to(fleet.inventory)
    env = {
        **os.environ,
        **fleet.env,
        "SUPERAGENT_HOME": str(root / "home"),
        "SUPERAGENT_AGENT": "replay",
        "SUPERAGENT_REPLAY_DIR": str(replay),
        "COLUMNS": "80",
    }
    for name in ("SUPERAGENT_INVENTORY", "SUPERAGENT_STATE_DB", "SUPERAGENT_QUEUE_DB"):
        env.pop(name, None)
    fleet.start()
    try:
        fleet.wait_ready()
        yield Sandbox(root, env, fleet)
    finally:
        fleet.stop()


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.name)
def test_the_command_block_runs_as_written(block: Block, sandbox: Sandbox) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    cwd = sandbox.root / f"doc-{block.doc.stem}"
    if not cwd.exists():  # one sandbox per document, its blocks in order
        cwd.mkdir()
        for name in ("specs", "inventory"):
            (cwd / name).symlink_to(sandbox.root / name)
    for command, expected in block.commands:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=cwd,
            env=sandbox.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        where = f"{block.name}: {command}"
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert done.returncode == 0, f"{where}\nexit {done.returncode}\n{output}"
        if expected is not None:
            assert json.loads(done.stdout) == json.loads(expected), f"{where}: {done.stdout}"
