"""`dispatch <spec>` from Slack: `control dispatch` started as a process of its own (a
crash there is not the agent's; the run resumes as any run does), followed by a thread
that posts the run's id and its end in the thread that asked.

The spec is a file of the configured directory, passed after `--`; the Slack tokens
are not in the child's environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from control.notify.render import slack_escape

if TYPE_CHECKING:
    from control.slack_commands import Commands

log = logging.getLogger("superagent.slack")


def command(commands: Commands, spec: Path) -> list[str]:
    argv = [sys.executable, "-m", "control", "dispatch", "--json", "--state", str(commands.state)]
    if commands.inventory is not None:
        argv += ["--inventory", str(commands.inventory)]
    return [*argv, "--", str(spec)]


def environment(commands: Commands) -> dict[str, str]:
    config = commands.config
    hidden = {s.env for s in (config.app_token, config.bot_token, config.signing_secret) if s.env}
    return {k: v for k, v in os.environ.items() if k not in hidden}


def stderr_of(commands: Commands, spec: Path) -> Path:
    return commands.state.parent / "slack-dispatch" / f"{spec.stem}.stderr"


def start(commands: Commands, spec: Path, channel: str, thread: str) -> subprocess.Popen[str]:
    logs = commands.state.parent / "slack-dispatch"
    logs.mkdir(mode=0o700, exist_ok=True)
    errors = stderr_of(commands, spec).open("w")
    process = subprocess.Popen(
        command(commands, spec),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
        env=environment(commands),
    )
    errors.close()
    threading.Thread(
        target=_follow, args=(commands, process, spec, channel, thread), daemon=True
    ).start()
    return process


def _follow(
    commands: Commands, process: subprocess.Popen[str], spec: Path, channel: str, thread: str
) -> None:
    last: dict[str, Any] = {}
    assert process.stdout is not None
    for line in process.stdout:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if data.get("event") == "run":
            verb = "resumed" if data.get("resumed") else "started"
            commands.post(channel, thread, slack_escape(f"run {data.get('run')} {verb}"))
        last = data
    code = process.wait()
    if "status" in last:
        text = f"run {last.get('run')} {last['status']}"
        if last.get("reason"):
            text += f": {' '.join(str(last['reason']).split())[:500]}"
    else:
        lines = stderr_of(commands, spec).read_text(errors="replace").strip().splitlines()
        text = f"`control dispatch {spec.name}` ended with exit code {code}" + (
            f": {lines[-1][:500]}" if lines else ""
        )
    try:
        commands.post(channel, thread, slack_escape(text))
    except Exception:
        log.exception("posting the end of a dispatch failed")
