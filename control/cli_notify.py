"""`control notify`: deliver the outbox (the fleet's notifications) outside a dispatch.

`control dispatch` delivers while it runs; this command sends what waits after it
ended (a sink that was down), or runs as a long-lived delivery process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer

from control import slack_config
from control.cli_io import (
    InventoryOption,
    JsonOption,
    StateOption,
    console,
    emit,
    open_store,
    state_path,
    workers_from,
)
from control.inventory import Worker
from control.notify.config import from_file, from_inventory
from control.notify.outbox import Outbox
from control.notify.service import Notifier
from control.slack_agent import Agent, notify_ready

app = typer.Typer()


@app.command("notify")
def notify(
    inventory: InventoryOption = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Sinks file (default: the inventory's settings)."),
    ] = None,
    state: StateOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Send what is due now, print the outbox, exit.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Deliver notifications from the outbox to the fleet's sinks (docs/notify.md)."""
    store = open_store(state)
    path = store.path
    store.close()
    settings = from_file(config) if config is not None else from_inventory(*_fleet(inventory))
    notifier = Notifier(path, settings)
    if once:
        delivered = notifier.run_once()
    else:
        stop = threading.Event()
        notifier.start()
        try:
            stop.wait()
        finally:
            notifier.stop()
        delivered = 0
    with open_store(path) as store:
        counts = Outbox(store).counts()
    emit(
        {"delivered": delivered, "outbox": counts},
        as_json,
        lambda: console.print(
            f"delivered {delivered}; outbox: "
            + (", ".join(f"{s} {dict(c)}" for s, c in counts.items()) or "empty"),
            highlight=False,
        ),
    )


def _fleet(inventory: Path | None) -> tuple[Path, list[Worker]]:
    workers = workers_from(inventory)
    assert inventory is not None
    return inventory, workers


@app.command("slack")
def slack(
    inventory: InventoryOption = None,
    state: StateOption = None,
    http: Annotated[
        bool,
        typer.Option("--http", help="Take Slack's HTTP requests instead of Socket Mode."),
    ] = False,
    host: Annotated[str, typer.Option("--host", help="HTTP mode: the address to bind.")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="HTTP mode: the port.")
    ] = 3000,
) -> None:
    """Run the Slack agent until stopped: Socket Mode (no open port), or `--http`
    with every request verified by Slack's signing secret (docs/slack.md)."""
    path = state_path(state)
    inventory_dir, workers = _fleet(inventory)
    config = slack_config.from_inventory(inventory_dir, workers)
    agent = Agent(config, path, inventory_dir, workers)
    try:
        if http:
            bound = agent.serve_http(host, port)
            console.print(f"listening on http://{host}:{bound}/slack/events", highlight=False)
        else:
            agent.start_socket_mode()
        notify_ready()
        threading.Event().wait()
    finally:
        agent.close()
