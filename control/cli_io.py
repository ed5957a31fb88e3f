"""What every command shares: its options, where the defaults live, JSON in and out.

The one home of the options more than one command takes (`--inventory`, `--state`,
`--run`, `--json`, `--agent`, the spec argument), so a name means the same thing
everywhere, and of the helpers that resolve them: the fleet, the run, and the transports
and the store, both closed at the end of a `with`.
Payloads and responses come only from stdin or a file, never from an argument a
shell would see; output is one JSON document, JSON lines (`dispatch`), or text.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from control.errors import NotFoundError, UsageError
from control.inventory import Worker, load_inventory
from control.jsontext import parse_json
from control.paths import default_home, default_queue_db, default_state_db
from control.spec import AGENT_BACKENDS
from control.state import RunRow, StateStore
from control.transport import Transports

console = Console(soft_wrap=True)  # log lines stay whole lines when piped
err_console = Console(stderr=True)


DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar="SUPERAGENT_QUEUE_DB",
        default_factory=default_queue_db,
        show_default=str(default_home() / "queue.db"),
        show_envvar=True,
        help="The inbox database file.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of text.")
]
JsonLinesOption = Annotated[
    bool,
    typer.Option("--json", help="Print JSON lines: one object per event, the summary last."),
]
InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        envvar="SUPERAGENT_INVENTORY",
        show_envvar=True,
        help="The fleet: an Ansible inventory directory (its group `workers`).",
        show_default=False,
    ),
]
StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state",
        envvar="SUPERAGENT_STATE_DB",
        show_envvar=True,
        show_default=str(default_home() / "state.db"),
        help="The orchestrator's state database.",
    ),
]
PollIntervalOption = Annotated[
    float, typer.Option("--poll-interval", min=0.05, help="Seconds between two polls of the fleet.")
]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", min=1, help="Give up after this many seconds.")
]
RunOption = Annotated[
    str | None,
    typer.Option("--run", help="The run id (`control runs` lists them).", show_default="latest"),
]
SpecArgument = Annotated[
    Path, typer.Argument(help="The spec file (JSON).", show_default=False, metavar="SPEC")
]


def _known_agent(value: str | None) -> str | None:
    if value is not None and value not in AGENT_BACKENDS:
        raise typer.BadParameter(
            f"unknown agent backend {value!r}; known: {', '.join(AGENT_BACKENDS)}"
        )
    return value


def agent_option(help_text: str, envvar: str | None = None) -> Any:
    """`--agent NAME`, refused at once unless NAME is an agent backend a worker has."""
    return typer.Option(
        "--agent",
        envvar=envvar,
        show_envvar=envvar is not None,
        callback=_known_agent,
        metavar="|".join(AGENT_BACKENDS),
        help=help_text,
    )


def inventory_dir(inventory: Path | None) -> Path:
    """`--inventory` (or $SUPERAGENT_INVENTORY); a command that needs one says how to give it."""
    if inventory is None:
        raise UsageError("no inventory: pass --inventory DIR or set SUPERAGENT_INVENTORY")
    return inventory


def workers_from(inventory: Path | None) -> list[Worker]:
    """The fleet of `--inventory`."""
    return load_inventory(inventory_dir(inventory))


def fleet_by_name(inventory: Path | None) -> dict[str, Worker]:
    """The fleet of `--inventory`, by worker name."""
    return {w.name: w for w in workers_from(inventory)}


def transports_to(inventory: Path | None) -> contextlib.closing[Transports]:
    """The transports to the fleet's hosts, closed at the end of the `with`."""
    return contextlib.closing(Transports(inventory=inventory))


def state_path(state: Path | None) -> Path:
    """`--state`, else $SUPERAGENT_STATE_DB, else the state.db of $SUPERAGENT_HOME."""
    return state or default_state_db()


def open_store(state: Path | None) -> StateStore:
    """The state database, which must exist: reading commands never create one (closed
    at the end of a `with`)."""
    state = state_path(state)
    if not state.exists():
        raise NotFoundError(f"{state}: no state database (nothing was dispatched yet)")
    return StateStore(state)


def pick_run(store: StateStore, run_id: str | None) -> RunRow:
    """The run `--run` names, else the latest; every command chooses a run this way."""
    if run_id is not None:
        return store.run(run_id)
    latest = store.latest_run()
    if latest is None:
        raise NotFoundError(f"{store.path}: no run yet")
    return latest


InputOption = Annotated[
    str | None,
    typer.Option("--file", "-f", help="Read the JSON from this file ('-' or absent: stdin)."),
]


def read_json(source: str | None, what: str = "payload") -> Any:
    """Parse JSON from a file or stdin, with a one-line error naming where it broke."""
    if source in (None, "-"):
        label = "stdin"
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError(f"no {what} on stdin: pipe the JSON in or use --file")
        raw = sys.stdin.buffer.read()
    else:
        label = source
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise UsageError(f"{source}: cannot read the {what} ({exc.strerror})") from exc
    return parse_json(raw, label, what)


def emit(data: Any, as_json: bool, render: Callable[[], None] | None = None) -> None:
    """Print `data` as JSON for scripts, or call `render` for people."""
    if as_json or render is None:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=None) + "\n")
        sys.stdout.flush()
    else:
        render()
