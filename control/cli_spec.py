"""`control validate` and `control plan`: a spec checked, and its run foreseen, before any agent.

Thin on purpose: the checks live in control.spec, the inventory in control.inventory,
the simulation in control.plan; these commands only parse, call and render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from control.cli_io import JsonOption, console, emit
from control.errors import ExitCode
from control.inventory import load_inventory
from control.spec import Issue, check_file

SpecArgument = Annotated[
    Path, typer.Argument(help="The spec file (JSON).", show_default=False, metavar="SPEC")
]
InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        envvar="SUPERAGENT_INVENTORY",
        help="Ansible inventory directory (inventory/<fleet>/); group 'workers' is the fleet.",
        show_default=False,
    ),
]


def _say(text: str, style: str | None = None) -> None:
    # Messages hold JSON paths such as `$.phases[0]`: never read them as rich markup.
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _issue_line(issue: Issue) -> str:
    return f"{issue.severity:<8}{issue.path}: {issue.message}"


def validate(
    spec: SpecArgument,
    inventory: InventoryOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on warnings too (vague phases).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check a spec: schema, ids, dependencies, cycles, branches, paths, capabilities, pins.

    Prints every problem at once with its JSON path. Exits 0 when valid, 1 when not
    (with --strict, warnings count), 2 when the spec is not a readable JSON file.
    """
    workers = None if inventory is None else load_inventory(inventory)
    report = check_file(spec, workers)
    data = {"spec": str(spec), **report.to_dict(strict)}

    def render() -> None:
        for issue in report.errors:
            _say(_issue_line(issue), "red")
        for issue in report.warnings:
            _say(_issue_line(issue), "yellow")
        counts = (
            f"{_plural(len(report.errors), 'error')}, {_plural(len(report.warnings), 'warning')}"
        )
        if report.ok(strict):
            assert report.spec is not None
            _say(f"{spec}: valid ({_plural(len(report.spec.phases), 'phase')}; {counts})", "green")
        else:
            why = " (--strict: warnings fail)" if not report.errors else ""
            _say(f"{spec}: invalid ({counts}){why}", "bold red")
        if inventory is None:
            _say("capabilities and pins not checked: pass --inventory DIR to check them")

    emit(data, as_json, render)
    if not report.ok(strict):
        raise typer.Exit(int(ExitCode.FAILURE))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
