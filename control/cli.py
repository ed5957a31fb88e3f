"""The `control` command: thin Typer commands over the library.

Every library error is caught here once, printed as one line on stderr, and
turned into its named exit code (see `control.errors.ExitCode`); Ctrl-C is 130,
SIGTERM 143, whatever the command was doing (a run stays resumable).

Commands are registered one way: each `cli_*` module has its own `typer.Typer`
whose commands are decorated with `@app.command()`; top-level ones are merged in
here (`add_typer` without a name), `queue` and `worker` are groups.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import typer
from typer.core import TyperGroup

from control import (
    __version__,
    cli_dispatch,
    cli_events,
    cli_fleet,
    cli_lifecycle,
    cli_notify,
    cli_queue,
    cli_run,
    cli_spec,
    cli_web,
    cli_worker,
)
from control.cli_io import err_console
from control.errors import ExitCode, SuperagentError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is so that it unwinds as Ctrl-C does."""


class _ErrorMappingGroup(TyperGroup):
    """Turns a SuperagentError raised anywhere below into `error: ...` and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SuperagentError as exc:
            message = " ".join(str(exc).split())
            err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except Terminated:
            err_console.print("terminated", markup=False)
            raise typer.Exit(int(ExitCode.TERMINATED)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="control",
    help=(
        "superagent: run AI coding agents across a fleet of your own machines.\n\n"
        "Exit codes: 0 ok, 1 failure, 2 bad input, 3 not found, 4 conflict "
        "(stale fence, reused key), 5 unavailable, 130 interrupted (Ctrl-C), "
        "143 terminated (SIGTERM)."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
for commands in (
    cli_spec.app,
    cli_dispatch.app,
    cli_run.app,
    cli_fleet.app,
    cli_lifecycle.app,
    cli_events.app,
    cli_notify.app,
    cli_web.app,
):
    app.add_typer(commands)
app.add_typer(cli_queue.app, name="queue")
app.add_typer(cli_worker.app, name="worker")


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """superagent: run AI coding agents across a fleet of your own machines."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main() -> None:
    # The default SIGTERM would end the process where it stands, without the
    # cleanup Ctrl-C gets (transports closed, the live view ended, exit 143).
    signal.signal(signal.SIGTERM, _terminate)
    app()
