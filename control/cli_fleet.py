"""The fleet from the orchestrator's side: `control health`, `workers`, `logs`, `enqueue`.

`health` polls every worker in one fan-out per transport and judges each: reachable,
heartbeat age, versions against the inventory's pins, inbox depth and the oldest
pending message; it exits non-zero when anything is wrong, so it can gate a run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from control import cli_io
from control.cli_io import (
    InventoryOption,
    JsonOption,
    RunOption,
    StateOption,
    agent_option,
    console,
    emit,
)
from control.cli_view import table
from control.errors import ExitCode, NotFoundError, UsageError
from control.operations import fleet_health, send_freeform
from control.phase_log import fetch_log, sent_attempt
from control.state import StateStore
from control.upkeep import answer_text

app = typer.Typer()
_VERSIONS = (
    ("node", "node"),
    ("claude_code", "claude"),
    ("superagent", "sa"),
    ("sandbox", "sandbox"),
)


@app.command()
def health(
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each worker: reachable, heartbeat age, versions against the pins, inbox depth,
    oldest pending message, current phase. Exits 1 when anything is wrong.

    On the way it stores the answers to free-form tasks (`control answers`) and
    delivers the cancels owed to workers, when a state database exists; it lists the
    hosts that database still holds state of but the inventory no longer has."""
    workers = cli_io.workers_from(inventory)
    with cli_io.transports_to(inventory) as transports:
        found = fleet_health(workers, transports, cli_io.state_path(state))
    reports, gone, healthy = found.reports, found.gone, found.healthy

    def render() -> None:
        shown = table("worker", "status", "beat", "queue", "versions", "problems")
        for r in reports:
            versions = r.get("versions") or {}
            running = ", ".join(r.get("current") or []) or str(r.get("running", "-"))
            status = str(r.get("status") or ("-" if r["reachable"] else "unreachable"))
            if r.get("drained") and status != "drained":
                status += " (drained)"
            shown.add_row(
                f"{r['worker']}\n({r['transport']})",
                status,
                f"{r['heartbeat_age_s']:.0f}s" if "heartbeat_age_s" in r else "-",
                f"{r.get('pending', '-')} pending\n{running} running",
                "\n".join(f"{label} {versions.get(key) or '-'}" for key, label in _VERSIONS)
                + ("\nsandbox TRUSTED (none)" if r["trusted_host"] else ""),
                Text("; ".join(r["problems"]) or "ok", style="red" if r["problems"] else "green"),
            )
        console.print(shown)
        for host in gone:
            console.print(
                f"{host}: state left but no longer in the inventory: `control remove {host}`",
                highlight=False,
            )

    emit({"healthy": healthy, "workers": reports, "gone": gone}, as_json, render)
    if not healthy:
        raise typer.Exit(int(ExitCode.FAILURE))


@app.command()
def workers(
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """The fleet as the inventory describes it, with what the orchestrator last saw."""
    fleet = cli_io.workers_from(inventory)
    seen: dict[str, Any] = {}
    with contextlib.suppress(NotFoundError):  # nothing dispatched yet: nothing seen
        store = cli_io.open_store(state)
        seen = {name: row.__dict__ for name, row in store.workers().items()}
        store.close()
    data = [{**w.to_dict(), "seen": seen.get(w.name)} for w in fleet]

    def render() -> None:
        shown = table("worker", "transport", "reach", "slots", "capabilities", "seen")
        for w in fleet:
            row = seen.get(w.name) or {}
            shown.add_row(
                w.name,
                w.transport,
                w.reach,
                str(w.slots),
                ", ".join(sorted(w.capabilities)),
                str(row.get("status") or "-") + (" (drained)" if row.get("drained") else ""),
            )
        console.print(shown)

    emit(data, as_json, render)


@app.command()
def logs(
    phase: Annotated[str, typer.Argument(help="The phase whose log to show.")],
    run_id: RunOption = None,
    attempt: Annotated[
        int | None, typer.Option("--attempt", min=1, help="Which attempt (default: the last).")
    ] = None,
    tail_kb: Annotated[int, typer.Option("--tail-kb", min=1, help="How much of its end.")] = 64,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """The worker's log of a phase's attempt (running or finished), fetched from the worker."""
    with cli_io.open_store(state) as store:
        run = cli_io.pick_run(store, run_id)
        chosen = sent_attempt(store, run.id, phase, attempt)
    fleet = cli_io.fleet_by_name(inventory)
    with cli_io.transports_to(inventory) as transports:
        answer = fetch_log(transports, fleet, chosen, tail_kb * 1024)
    data = {
        "run": run.id,
        "phase": phase,
        "attempt": chosen.attempt,
        "worker": chosen.worker,
        **answer,
    }

    def render() -> None:
        console.print(
            f"# {chosen.worker}:{answer['path']} ({answer['state']}, {answer['size']} bytes)",
            highlight=False,
            markup=False,
        )
        sys.stdout.write(answer["text"])

    emit(data, as_json, render)


@app.command()
def enqueue(
    host: Annotated[str, typer.Argument(help="The worker to give the task to.")],
    agent: Annotated[str, agent_option("Agent backend on the worker.")] = "claude-code",
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """A free-form task for one worker: the text on stdin, never on the command line.

    The answer comes back with the next `control dispatch` or `control health` poll
    that sees it; it is stored in the state database.
    """
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("the task text goes on stdin: echo 'task' | control enqueue HOST")
    text = sys.stdin.read()
    fleet = cli_io.fleet_by_name(inventory)
    with (
        StateStore(cli_io.state_path(state)) as store,
        cli_io.transports_to(inventory) as transports,
    ):
        sent = send_freeform(store, transports, fleet, host, text, agent)
    emit(
        {"worker": host, "key": sent.key, "id": sent.id, "duplicate": sent.duplicate},
        as_json,
        lambda: console.print(f"sent to {host} as message {sent.id} ({sent.key})"),
    )


@app.command()
def answers(
    state: StateOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, newest first.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Free-form tasks sent with `control enqueue`, newest first, with their answers
    (stored by the next `control dispatch` or `control health` that polled them)."""
    with cli_io.open_store(state) as store:
        rows = store.answers(limit)

    def render() -> None:
        # The answer last, as the one long column; its key on its first line.
        shown = table("sent", "worker", "state", "answer")
        for row in rows:
            shown.add_row(
                time.strftime("%Y-%m-%d %H:%M", time.localtime(row["sent_at"])),
                row["worker"],
                row["state"],
                Text(f"{row['key']}\n{answer_text(row)[:200] or '-'}"),  # agent text: data
            )
        console.print(shown)

    emit({"answers": rows}, as_json, render)
