"""`control events`: read (and follow) the event stream of the state database.

Thin: `control.events` reads; this renders one line per event, or JSON lines.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from control import events
from control.cli_io import StateOption, console, open_store

app = typer.Typer()


@app.command("events")
def events_command(
    run_id: Annotated[
        str | None, typer.Option("--run", help="Only this run's events (default: all runs).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they come.")
    ] = False,
    after: Annotated[
        int, typer.Option("--after", min=0, help="Only events after this id (a cursor).")
    ] = 0,
    state: StateOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (schema: docs/events.md).")
    ] = False,
) -> None:
    """Every run, phase, worker and fleet event, oldest first; --follow waits for more."""
    with open_store(state) as store:
        if run_id is not None:
            store.run(run_id)  # an unknown run is an error, not an empty stream

        def show(event: events.Event) -> None:
            if as_json:
                sys.stdout.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
            else:
                console.print(events.describe(event), markup=False, highlight=False)
            sys.stdout.flush()

        if follow:
            for event in events.follow(store.conn, after_id=after, run_id=run_id):
                show(event)
        else:
            cursor = after
            while batch := events.read(store.conn, after_id=cursor, run_id=run_id):
                for event in batch:
                    show(event)
                cursor = batch[-1].id
