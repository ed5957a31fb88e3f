"""Commands are registered one way (control/cli.py): each `cli_*` module that has commands
has its own `typer.Typer` called `app`, decorated with `@app.command()`, and cli.py adds
every one of them; nothing else registers a command."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import typer

import control
from control import cli

ROOT = Path(control.__file__).resolve().parent
# Any other way to add a command: a call of `command()` on something else, the group
# API, or Typer's lists written to directly.
OTHER_WAYS = re.compile(r"\.command\(\)\(|add_command\(|registered_commands|registered_groups")


def _cli_modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(control.__path__) if m.name.startswith("cli_")]


def test_every_module_with_commands_is_added_by_cli_py() -> None:
    added = [group.typer_instance for group in cli.app.registered_groups]
    with_commands = []
    for name in _cli_modules():
        app = getattr(importlib.import_module(f"control.{name}"), "app", None)
        if app is None:
            continue  # plumbing (cli_io, cli_view): no commands of its own
        assert isinstance(app, typer.Typer), name
        assert app.registered_commands, f"control/{name}.py has an app with no command"
        assert app in added, f"control/{name}.py's commands are not added in control/cli.py"
        with_commands.append(name)
    assert len(with_commands) == len(added)


def test_no_command_is_registered_another_way() -> None:
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name == "cli.py" and path.parent == ROOT:
            text = text.replace("app.add_typer(", "")  # the one place groups are added
        found = OTHER_WAYS.search(text)
        assert found is None, f"{path.relative_to(ROOT)}: {found and found.group(0)}"
