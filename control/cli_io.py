"""What every command shares: where the defaults live, JSON in, JSON or rich text out.

Payloads and responses come only from stdin or a file, never from an argument a
shell would see; output is either one JSON document (`--json`) or text for people.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from control.errors import UsageError
from control.jsontext import parse_json
from control.paths import default_queue_db

console = Console(soft_wrap=True)  # log lines stay whole lines when piped
err_console = Console(stderr=True)


DbOption = Annotated[
    Path,
    typer.Option(
        "--db",
        envvar="SUPERAGENT_QUEUE_DB",
        default_factory=default_queue_db,
        show_default="$SUPERAGENT_QUEUE_DB or $SUPERAGENT_HOME/queue.db",
        help="The inbox database file.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
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
