"""`control validate` and `control plan`: a spec checked, and its run foreseen, before any agent.

Thin on purpose: the checks live in control.spec, the inventory in control.inventory,
the simulation in control.plan; these commands only parse, call and render.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from control.cli_io import InventoryOption, JsonOption, SpecArgument, console, emit
from control.cli_view import table
from control.errors import ExitCode, UsageError
from control.inventory import load_inventory
from control.plan import Plan, utilisation
from control.plan import plan as make_plan
from control.spec import Issue, check_file, load_spec

app = typer.Typer()


def _say(text: str, style: str | None = None) -> None:
    # Messages hold JSON paths such as `$.phases[0]`: never read them as rich markup.
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _report(text: str, style: str | None = None) -> None:
    """A line of the plan's report: wrapped at words to the terminal (80 columns when
    piped), unlike a validation message, which stays one line for grep."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=False)


def _issue_line(issue: Issue) -> str:
    return f"{issue.severity:<8}{issue.path}: {issue.message}"


@app.command()
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


@app.command()
def plan(
    ctx: typer.Context,
    spec: SpecArgument,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="Plan for N interchangeable machines with every capability (pins ignored).",
            show_default="1, unless --inventory",
        ),
    ] = None,
    inventory: InventoryOption = None,
    as_json: JsonOption = False,
) -> None:
    """Foresee a run: waves, critical path, simulated makespan, and the lower bound.

    The makespan comes from a simulation that drives the real scheduler with the
    phases' estimates; the lower bound is the largest of the critical path, the
    work per slot, and per capability (and pin) the work that needs it per slot
    that has it. The table of 1, 2, ... machines shows where one more stops paying.
    """
    if workers is not None and inventory is not None:
        if getattr(ctx.get_parameter_source("inventory"), "name", "") == "ENVIRONMENT":
            inventory = None  # --workers asks for a what-if fleet over $SUPERAGENT_INVENTORY's
        else:
            raise UsageError("give --workers N or --inventory DIR, not both")
    fleet = None if inventory is None else load_inventory(inventory)
    result = make_plan(load_spec(spec, fleet), fleet, workers or 1)
    if as_json:  # the whole schedule as JSON costs time a person's report does not need
        emit(result.to_dict(), as_json)
    else:
        _render_plan(result)


def _minutes(value: float) -> str:
    """A duration given in minutes: seconds under a minute, minutes and seconds under ten."""
    seconds = round(value * 60)
    if seconds < 60:
        return f"{seconds} s"
    if value < 10 and seconds % 60:
        return f"{seconds // 60} min {seconds % 60} s"
    text = f"{value:,.0f} min"
    return f"{text} ({int(value // 60)}h {round(value % 60):02d}m)" if value >= 60 else text


def _amount(value: float) -> str:
    """A number of minutes in a list of them: whole unless it is small."""
    return f"{value:,.0f}" if value >= 10 or value == round(value) else f"{value:.2g}"


# A plan of thousands of phases is read in its first lines; `--json` has it all.
_SHOWN_NAMES = 12
_SHOWN_WAVES = 30
_SHOWN_RUNS = 40


def _some(names: Sequence[str], limit: int, joint: str) -> str:
    """`names` joined, or the first of them and how many more."""
    if len(names) <= limit:
        return joint.join(names)
    return f"{joint.join(names[: limit - 1])}{joint}... and {len(names) - limit + 1:,} more"


def _render_plan(result: Plan) -> None:
    bound = result.bound
    fleet = ", ".join(
        f"{w.name} ({w.slots} slot{'s' if w.slots != 1 else ''}"
        + (f"; {', '.join(sorted(w.capabilities))})" if w.capabilities else ")")
        for w in result.workers
    )
    phases = sum(len(w) for w in result.waves)
    _report(
        f"{result.spec}: {phases} phases in {len(result.waves)} waves, "
        f"{_minutes(result.total_minutes)} of work",
        "bold",
    )
    _report(f"fleet ({result.fleet}): {fleet}")
    for number, wave in enumerate(result.waves[:_SHOWN_WAVES], 1):
        _report(f"  wave {number}: {_some(wave, _SHOWN_NAMES, ', ')}")
    if len(result.waves) > _SHOWN_WAVES:
        _report(f"  ... and {len(result.waves) - _SHOWN_WAVES:,} more waves")
    _report(
        f"critical path: {_some(result.critical_path, _SHOWN_NAMES, ' -> ')}  "
        f"{_minutes(bound.critical_path)}"
    )
    _report(f"simulated makespan: {_minutes(result.simulation.makespan)}", "bold")
    terms = [
        f"critical path {_amount(bound.critical_path)}",
        f"work / slots {_amount(bound.work_per_slot)}",
    ]
    terms += [f"{c} {_amount(v)}" for c, v in bound.capabilities.items()]
    terms += [f"only {g} {_amount(v)}" for g, v in bound.groups.items()]
    _report(
        f"lower bound: {_minutes(bound.minutes)}, set by the {bound.binding} "
        f"(in minutes: {'; '.join(terms)})"
    )
    _report(f"makespan / lower bound: {result.ratio:.3f}")
    busy = utilisation(result.simulation, list(result.workers))
    schedule = table("phase", "worker", "start", "end", title="simulated schedule (minutes)")
    runs = sorted(result.simulation.runs, key=lambda r: (r.start, r.worker))
    for run in runs[:_SHOWN_RUNS]:
        schedule.add_row(run.phase, run.worker, _amount(run.start), _amount(run.end))
    console.print(schedule)
    if len(runs) > _SHOWN_RUNS:
        _report(
            f"... and {len(runs) - _SHOWN_RUNS:,} more runs (`control plan --json` has them all)"
        )
    _report("busy: " + ", ".join(f"{name} {share:.0%}" for name, share in busy.items()))
    sweep = table("machines", "makespan", "vs 1 machine", title="interchangeable machines")
    single = result.sweep[0][1] if result.sweep else 0.0
    for count, makespan in result.sweep:
        speedup = f"{single / makespan:.2f}x" if makespan else "-"
        sweep.add_row(str(count), _minutes(makespan), speedup)
    console.print(sweep)
