"""The `control` command: thin Typer commands over the library.

Every library error is caught here once, printed as one line on stderr, and
turned into its named exit code (see `control.errors.ExitCode`); Ctrl-C is 130.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from control import __version__
from control.cli_events import register as register_event_commands
from control.cli_fleet import register as register_fleet_commands
from control.cli_io import err_console
from control.cli_lifecycle import register as register_lifecycle_commands
from control.cli_notify import register as register_notify_commands
from control.cli_queue import queue_app
from control.cli_run import register as register_run_commands
from control.cli_spec import plan, validate
from control.cli_worker import worker_app
from control.errors import ExitCode, SuperagentError


class _ErrorMappingGroup(TyperGroup):
    """Turns a SuperagentError raised anywhere below into `error: ...` and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SuperagentError as exc:
            message = " ".join(str(exc).split())
            err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="control",
    help=(
        "superagent: run AI coding agents across a fleet of your own machines.\n\n"
        "Exit codes: 0 ok, 1 failure, 2 bad input, 3 not found, 4 conflict "
        "(stale fence, reused key), 5 unavailable, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(queue_app, name="queue")
app.add_typer(worker_app, name="worker")
register_run_commands(app)
register_fleet_commands(app)
register_event_commands(app)
register_notify_commands(app)
register_lifecycle_commands(app)
app.command("validate")(validate)
app.command("plan")(plan)


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


def main() -> None:
    app()
