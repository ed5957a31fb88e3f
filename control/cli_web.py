"""`control serve`: the web dashboard of a state database (docs/dashboard.md).

Thin: it checks the binding against the token before anything listens, then hands
the application to uvicorn. Read-only unless `--actions`; loopback unless a token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from control.cli_io import InventoryOption, StateOption, console, open_store, workers_from
from control.web.auth import TOKEN_ENV, Access, is_loopback, read_token

app = typer.Typer()


@app.command()
def serve(
    state: StateOption = None,
    inventory: InventoryOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; not loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8765,
    actions: Annotated[
        bool, typer.Option("--actions", help="Allow retry and cancel (needs a token).")
    ] = False,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help=f"A 0600 file holding the token (else ${TOKEN_ENV}); never on the command line.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A Host header to accept besides the address itself (a reverse proxy's name).",
        ),
    ] = None,
) -> None:
    """Serve the live dashboard: runs, each run's graph, the fleet, the costs.

    It reads the state database only (retry and cancel with `--actions` and a token),
    binds 127.0.0.1 unless told otherwise, and with `--inventory` also shows each
    worker's slots and pins and streams phase logs from the workers."""
    token = read_token(token_file, os.environ)
    access = Access.for_binding(host, token, actions)
    store = open_store(state)  # it must exist: the dashboard never creates one
    path = store.path
    store.close()
    fleet = workers_from(inventory) if inventory is not None else []
    # On loopback, only loopback names: a page elsewhere whose name resolves to
    # 127.0.0.1 (DNS rebinding) gets 400. Elsewhere the token guards every page, and the
    # names people use are not known here unless given.
    if is_loopback(host):
        hosts = [host, "127.0.0.1", "localhost", "[::1]", *(allowed_host or [])]
    else:
        hosts = [host, *allowed_host] if allowed_host else ["*"]
    # The web stack loads only when serving: every other command starts faster.
    import uvicorn  # noqa: PLC0415

    from control.web.app import Config, create_app  # noqa: PLC0415

    config = Config(
        state=path,
        access=access,
        inventory=inventory,
        fleet=fleet,
        allowed_hosts=list(dict.fromkeys(hosts)),
    )
    console.print(f"dashboard on http://{host}:{port}/ ({path})", highlight=False, markup=False)
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,  # open live streams never end on their own
    )
