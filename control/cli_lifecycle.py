"""A machine's life in the fleet: `control drain`, `undrain`, `remove`, `upgrade` (a
rolling one), and `repin` (a run moved to the versions the fleet was upgraded to).

Thin: each parses, calls `control.lifecycle`, and renders what it did.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from control import cli_io
from control.cli_io import InventoryOption, JsonOption, RunOption, StateOption, console, emit
from control.errors import ExitCode, NotFoundError
from control.lifecycle import drain as drain_worker
from control.lifecycle import fleet_worker, repin_running
from control.lifecycle import remove as remove_host
from control.lifecycle import repin as repin_run
from control.lifecycle import undrain as undrain_worker
from control.state import StateStore
from control.upgrade import RolloutSettings, ansible_provision, rolling_upgrade

HostArgument = Annotated[str, typer.Argument(help="The worker, by its inventory name.")]

app = typer.Typer()


@contextlib.contextmanager
def _store_if_any(state: StateOption) -> Iterator[StateStore | None]:
    """The state database for the `with`, or None when there is none yet (nothing
    dispatched: nothing to mirror)."""
    try:
        store = cli_io.open_store(state)
    except NotFoundError:
        yield None
        return
    with store:
        yield store


@app.command()
def drain(
    host: HostArgument,
    now: Annotated[
        bool,
        typer.Option(
            "--now", help="Also hand back the phases it runs; they are reassigned at once."
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (shown in health and status).")
    ] = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a worker claiming new work; what it runs finishes (or, with --now, moves).

    The flag lives in the worker's inbox: it holds across restarts until `control undrain`."""
    worker = fleet_worker(cli_io.fleet_by_name(inventory), host)
    with cli_io.transports_to(inventory) as transports, _store_if_any(state) as store:
        flag = drain_worker(worker, transports, store, now=now, reason=reason)
    emit(
        {"worker": host, "drained": flag},
        as_json,
        lambda: console.print(
            f"{host} drained{' now: its running phases are handed back' if flag['now'] else ''}",
            highlight=False,
        ),
    )


@app.command()
def undrain(
    host: HostArgument,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let a drained worker claim work again."""
    worker = fleet_worker(cli_io.fleet_by_name(inventory), host)
    with cli_io.transports_to(inventory) as transports, _store_if_any(state) as store:
        was = undrain_worker(worker, transports, store)
    emit(
        {"worker": host, "was_drained": was},
        as_json,
        lambda: console.print(f"{host} {'undrained' if was else 'was not drained'}"),
    )


@app.command()
def remove(
    host: Annotated[str, typer.Argument(help="The host, in the inventory or already gone.")],
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a machine out of the fleet: drain it --now if it answers, reassign its
    phases in every open run, drop the cancels it is owed, forget its state.

    Then delete it from the inventory (`control health` lists hosts still to remove)."""
    fleet = cli_io.fleet_by_name(inventory)
    with (
        cli_io.open_store(state) as store,
        cli_io.transports_to(inventory) as transports,
    ):
        done = remove_host(host, fleet, transports, store, clock_now=time.time())

    def render() -> None:
        how = (
            "drained"
            if done.drained
            else f"not reached ({done.unreachable or 'not in the inventory'})"
        )
        console.print(
            f"{host} removed: {how}; {len(done.reassigned)} phase(s) reassigned, "
            f"{done.cancels_delivered} cancel(s) delivered, {done.cancels_dropped} dropped",
            highlight=False,
            markup=False,
        )
        if host in fleet:
            console.print(f"now delete {host} from the inventory", highlight=False)

    emit(done.to_dict(), as_json, render)


@app.command()
def repin(
    run_id: RunOption = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move a run to the versions the inventory pins now (after upgrading the fleet under
    it): until then it gives no work to hosts that report other versions than its own."""
    workers = cli_io.workers_from(inventory)
    with cli_io.open_store(state) as store:
        run = cli_io.pick_run(store, run_id)
        pins = repin_run(store, run.id, workers)
    emit(
        {"run": run.id, "pins": pins},
        as_json,
        lambda: console.print(
            f"run {run.id} now runs on " + ", ".join(f"{k} {v}" for k, v in sorted(pins.items())),
            highlight=False,
        ),
    )


@app.command()
def upgrade(
    batch: Annotated[int, typer.Option("--batch", min=1, help="Hosts upgraded at a time.")] = 1,
    playbook: Annotated[
        Path, typer.Option("--playbook", help="The playbook that provisions a host.")
    ] = Path("playbooks/site.yml"),
    idle_timeout: Annotated[
        float, typer.Option("--idle-timeout", min=1, help="Seconds a drained host may run on.")
    ] = 3600.0,
    health_timeout: Annotated[
        float,
        typer.Option("--health-timeout", min=1, help="Seconds a host may take to come back."),
    ] = 300.0,
    vault_password_file: Annotated[
        Path | None,
        typer.Option("--vault-password-file", help="For an inventory with vaulted secrets."),
    ] = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rolling upgrade to the inventory's pins, a batch at a time: drain, wait until idle,
    provision (ansible-playbook --limit), check the new versions, undrain, next.

    Once every host is upgraded, the unfinished runs in --state move to the new pins
    (`control repin`). A host that fails stops the rollout and stays drained with the
    reason (exit 1); the runs then keep their pins and the hosts still on them."""
    inventory = cli_io.inventory_dir(inventory)
    workers = cli_io.workers_from(inventory)
    with cli_io.transports_to(inventory) as transports:
        rollout = rolling_upgrade(
            workers,
            transports,
            ansible_provision(inventory, playbook, vault_password_file=vault_password_file),
            RolloutSettings(
                batch=batch, idle_timeout_s=idle_timeout, health_timeout_s=health_timeout
            ),
        )
    repinned: dict[str, dict[str, str]] = {}
    if rollout.ok:
        with _store_if_any(state) as store:
            repinned = {} if store is None else repin_running(store, workers)

    def render() -> None:
        for step in rollout.steps:
            console.print(
                f"{step.host}: {'upgraded' if step.ok else 'FAILED'} in {step.seconds:g}s"
                + (f" ({step.reason})" if step.reason else ""),
                highlight=False,
                markup=False,
            )
        if rollout.stopped:
            console.print(f"rollout stopped: {rollout.stopped}", highlight=False, markup=False)
        for run_id in repinned:
            console.print(f"run {run_id} moved to the new pins", highlight=False)

    emit({**rollout.to_dict(), "repinned": sorted(repinned)}, as_json, render)
    if not rollout.ok:
        raise typer.Exit(int(ExitCode.FAILURE))
