"""Playbook runs against the fleet's inventory, the way `make provision` runs them: the
repository's ansible.cfg, the fleet's vault password and SSH control path, a log per run,
and the PLAY RECAP parsed."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fleet.harness.config import REPO
from tests.fleet.harness.system import run

# The caller's settings that pass through: callbacks, so that a session can time each task
# (ANSIBLE_CALLBACKS_ENABLED=profile_tasks, or a plugin of its own in ANSIBLE_CALLBACK_PLUGINS).
PASSED_THROUGH = ("ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_CALLBACK_PLUGINS")


def ansible_env(control_path_dir: Path, vault_password_file: Path) -> dict[str, str]:
    """The environment `make provision` gives Ansible; the caller's other ANSIBLE_* dropped."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") or k in PASSED_THROUGH
    }
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_path_dir),
        ANSIBLE_VAULT_PASSWORD_FILE=str(vault_password_file),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{REPO / '.venv/bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    return env


def run_playbook(
    playbook: str,
    *,
    inventory_dir: Path,
    env: dict[str, str],
    logs: Path,
    limit: str | None = None,
    tags: str | None = None,
    extra_vars: dict[str, Any] | None = None,
    timeout: float = 1200,
    label: str = "playbook",
) -> PlaybookRun:
    """Run a playbook against `inventory_dir`; the log goes to `logs`."""
    argv = [
        str(REPO / ".venv/bin/ansible-playbook"),
        "-i",
        str(inventory_dir),
        str(REPO / playbook),
    ]
    if limit:
        argv += ["--limit", limit]
    if tags:
        argv += ["--tags", tags]
    if extra_vars:
        argv += ["--extra-vars", json.dumps(extra_vars)]
    started = time.monotonic()
    done = run(argv, check=False, timeout=timeout, env=env, cwd=REPO)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (logs / f"{stamp}-{label}.log").write_text(" ".join(argv) + "\n\n" + output)
    return PlaybookRun(done.returncode, parse_recap(output), output, seconds)


@dataclass
class PlaybookRun:
    rc: int
    recap: dict[str, dict[str, int]]
    output: str
    seconds: float

    def changed(self) -> int:
        return sum(h.get("changed", 0) for h in self.recap.values())

    def changed_tasks(self) -> list[str]:
        """'task [host]' for every change the run reported."""
        found, task = [], "?"
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line[line.index("[") + 1 : line.rindex("]")]
            elif line.startswith("changed: ["):
                found.append(f"{task} {line.split()[1]}")
        return found

    def failed_hosts(self) -> list[str]:
        return [n for n, h in self.recap.items() if h.get("failed") or h.get("unreachable")]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """{host: {ok, changed, unreachable, failed, skipped, ...}} from the PLAY RECAP."""
    recap: dict[str, dict[str, int]] = {}
    _, _, tail = output.rpartition("PLAY RECAP")
    for line in tail.splitlines():
        match = _RECAP.match(line.strip())
        if match:
            recap[match.group(1)] = {
                k: int(v) for k, v in (pair.split("=") for pair in match.group(2).split())
            }
    return recap
