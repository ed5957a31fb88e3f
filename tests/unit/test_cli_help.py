"""Every command documents itself: help text, and `--help` that works."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from control import __version__
from control.cli import app

runner = CliRunner()


def _walk(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(command, "commands"):  # a group (Typer vendors its own click)
        for name, sub in command.commands.items():
            found += _walk(sub, (*path, name))
    return found


ROOT = typer.main.get_command(app)
COMMANDS = _walk(ROOT)


def _lookup(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


def test_the_tree_has_the_queue_commands() -> None:
    names = {" ".join(p) for p in COMMANDS}
    for sub in ("init", "enqueue", "claim", "renew", "complete", "fail", "responses", "ack",
                "cancel", "requeue", "list", "show", "stats", "prune"):  # fmt: skip
        assert f"queue {sub}" in names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "control")
def test_command_has_help(path: tuple[str, ...]) -> None:
    command = _lookup(path)
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    for param in command.params:
        if param.param_type_name == "option" and param.name not in ("help",):
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help"


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip()


def test_the_console_script_prints_its_version_without_loading_the_cli() -> None:
    """Every provisioning run reads `control --version` on every host: it answers the
    package's version as the full CLI does, without importing the CLI."""
    probe = (
        "import sys; sys.argv = ['control', '--version']; from control.entry import main; "
        "main(); print(sorted(m for m in ('typer', 'control.cli') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [__version__, "[]"]
    assert runner.invoke(app, ["--version"]).stdout.strip() == __version__
