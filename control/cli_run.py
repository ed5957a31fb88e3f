"""The commands around a run once dispatched: `control runs`, `status`, `watch`, `retry`,
`cancel`, `gc`.

Thin: each parses, calls `control.state` / `control.operations`, and renders (see
`control.cli_view`). A run is always chosen with `--run` (default: the latest), through
`cli_io.pick_run`.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.live import Live

from control import cli_io, operations
from control.checkpoint_gc import forget_finished_checkpoints
from control.cli_io import InventoryOption, JsonOption, RunOption, StateOption, console, emit
from control.cli_view import (
    live_view,
    money,
    money_line,
    phase_summary,
    phase_table,
    table,
    workers_line,
)
from control.driver import DEFAULT_RETENTION_DAYS
from control.errors import UnavailableError

app = typer.Typer()


# -- commands ----------------------------------------------------------------------


@app.command()
def runs(
    state: StateOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The runs of the state database, newest first: status, phases done, the live
    `control dispatch` driving each (process@host), spec. A running run that nothing
    drives is `interrupted`: `control dispatch SPEC` resumes it."""
    with cli_io.open_store(state) as store:
        found = [
            (run, store.run_state(run), store.phases(run.id), store.live_driver(run))
            for run in store.runs(limit)
        ]
    data: list[dict[str, Any]] = [
        {
            "run": run.id,
            "status": state,
            "spec": run.spec_path,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "phases": len(phases),
            "done": sum(1 for r in phases.values() if r.state == "done"),
            "driver": driver,  # the `control dispatch` driving it now, if any
            "reason": run.reason,
        }
        for run, state, phases, driver in found
    ]

    def render() -> None:
        if not data:
            console.print(f"{cli_io.state_path(state)}: no run yet", highlight=False)
            return
        shown = table("run", "status", "done", "started", "driver", "spec", whole=("run",))
        for row in data:
            driver = row["driver"]
            shown.add_row(
                row["run"],
                row["status"],
                f"{row['done']}/{row['phases']}",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"])),
                f"{driver.get('pid')}@{driver.get('host')}" if driver else "-",
                row["spec"],
            )
        console.print(shown)

    emit(data, as_json, render)


@app.command()
def status(
    run_id: RunOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Phases of a run in dependency order: state, worker, attempts, commit, cost, and
    why each waits or failed."""
    with cli_io.open_store(state) as store:
        run = cli_io.pick_run(store, run_id)
        data = {
            "run": run.id,
            "status": store.run_state(run),  # `interrupted` when nothing drives it
            "driver": store.live_driver(run),
            "spec": run.spec_path,
            "reason": run.reason,
            "merge_branch": run.merge_branch,
            "merge_commit": run.merge_commit,
            "summary": run.summary,
            "pins": run.pins,
            "phases": phase_summary(store, run),
            "workers": {n: w.__dict__ for n, w in store.workers().items()},
            "money": money(store, run),
        }

        def render() -> None:
            console.print(
                f"run {run.id} ({store.run_status(run)}) of {run.spec_path}", highlight=False
            )
            console.print(phase_table(store, run))
            console.print(workers_line(store))
            console.print(money_line(data["money"]), highlight=False, markup=False)
            if run.reason:
                console.print(f"reason: {run.reason}", highlight=False, markup=False)
            if run.merge_branch:
                console.print(f"merged: {run.merge_branch} at {run.merge_commit}", highlight=False)
            if run.summary:
                console.print(f"pruned; summary: {json.dumps(run.summary)}", highlight=False)

        emit(data, as_json, render)


@app.command()
def watch(
    run_id: RunOption = None,
    state: StateOption = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Refresh seconds.")] = 1.0,
) -> None:
    """Follow a run live (read-only) until it ends; Ctrl-C stops watching, not the run."""
    with cli_io.open_store(state) as store:
        run = cli_io.pick_run(store, run_id)
        started = run.created_at
        with Live(live_view(store, run.id, started), console=console) as view:
            while store.run(run.id).status == "running":
                time.sleep(interval)
                view.update(live_view(store, run.id, started))
            view.update(live_view(store, run.id, started))


@app.command()
def retry(
    phases: Annotated[list[str], typer.Argument(help="Phases to give fresh attempts.")],
    run_id: RunOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give dead or cancelled phases fresh attempts; the next `control dispatch` runs them."""
    with cli_io.open_store(state) as store:
        run = cli_io.pick_run(store, run_id)
        store.retry_phases(run.id, phases, "retry requested")
    emit(
        {"run": run.id, "retried": phases},
        as_json,
        lambda: console.print(
            f"{', '.join(phases)} will run again; resume with `control dispatch SPEC`"
        ),
    )


@app.command()
def cancel(
    phases: Annotated[
        list[str] | None, typer.Argument(help="Phases to cancel (default: the whole run).")
    ] = None,
    run_id: RunOption = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel phases (or a whole run), stopping their agents on the workers."""
    with cli_io.open_store(state) as store, cli_io.transports_to(inventory) as transports:
        run = cli_io.pick_run(store, run_id)
        fleet = cli_io.fleet_by_name(inventory) if inventory else {}
        done = operations.cancel(store, transports, fleet, run, phases)
    note = " (their agents are stopped when their workers are next reached)"
    emit(
        {"run": run.id, "cancelled": done.cancelled, "stopped": done.stopped},
        as_json,
        lambda: console.print(
            f"cancelled {', '.join(done.cancelled) or 'nothing'}{note if done.unstopped else ''}"
        ),
    )


@app.command()
def gc(
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            min=0,
            help="Prune finished runs (and answered free-form tasks) older than these days.",
        ),
    ] = DEFAULT_RETENTION_DAYS,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prune the state database: finished runs past the age keep a summary (status,
    phase counts, cost, merge) and lose their phases, attempts and events. `control
    dispatch` does the same at start with $SUPERAGENT_RETENTION_DAYS (default 180).
    Then delete, on their remotes, the checkpoints of runs that are finished (done,
    cancelled, or failed and pruned); a remote that cannot be reached fails the command
    after the rest is done."""
    with cli_io.open_store(state) as store:
        pruned = store.gc(older_than)
        forgotten = forget_finished_checkpoints(store, store.path.parent / "git")
    deleted = sum(len(refs) for refs in forgotten.deleted.values())
    emit(
        {**pruned.__dict__, "checkpoints_deleted": forgotten.deleted,
         "checkpoints_failed": forgotten.failed},
        as_json,
        lambda: console.print(
            f"pruned {pruned.runs} run(s) ({pruned.events} events) and {pruned.answers} "
            f"answer(s) older than {older_than:g} days; deleted {deleted} checkpoint(s) of "
            f"{len(forgotten.deleted)} finished run(s)"
        ),
    )  # fmt: skip
    if forgotten.failed:
        url, why = next(iter(forgotten.failed.items()))
        raise UnavailableError(f"cannot delete the checkpoints on {url}: {why}")
