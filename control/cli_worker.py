"""`control worker ...`: run this machine's worker, or check that it may take work."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from control.cli_io import JsonOption, console, emit
from control.cli_view import table
from control.errors import ExitCode, SuperagentError
from control.queue import Queue
from control.worker.checks import run_checks
from control.worker.config import WorkerConfig, load_config
from control.worker.daemon import WorkerDaemon
from control.worker.phase import PhaseExecutor

app = typer.Typer(
    help="This machine's worker: run it (systemd does) or check it.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="SUPERAGENT_WORKER_CONFIG",
        help="Worker settings (TOML); default /etc/superagent/worker.toml if present.",
    ),
]
IdOption = Annotated[str | None, typer.Option("--id", help="Override the worker id.")]
DbOption = Annotated[Path | None, typer.Option("--db", help="Override the inbox path.")]
SlotsOption = Annotated[
    int | None, typer.Option("--slots", min=1, help="Override how many phases run at once.")
]


def _config(config: Path | None, **overrides: Any) -> WorkerConfig:
    return load_config(config, overrides)


@app.command()
def check(
    config: ConfigOption = None,
    worker_id: IdOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check pinned versions, git, the inbox and the directories; exit 1 when unfit.

    Also the systemd unit's ExecStartPre. On a problem the reason goes into the
    heartbeat, so `control health` on the orchestrator shows it.
    """
    settings = _config(config, worker_id=worker_id, queue_db=db)
    report = run_checks(settings)
    if not report.ok:
        # An inbox that does not open is already one of the problems reported.
        with contextlib.suppress(SuperagentError), Queue(settings.queue_db, create=False) as queue:
            queue.beat(
                settings.worker_id, "refusing", versions=report.versions, reason=report.reason
            )
    # What this host is pinned to: an agent CLI found but unpinned is reported, not held to a pin.
    pinned = {k: v for k, v in dataclasses.asdict(settings.pins).items() if v is not None}
    data = {
        "worker": settings.worker_id,
        "ok": report.ok,
        "versions": report.versions,
        "pins": pinned,
        "problems": report.problems,
    }

    def render() -> None:
        versions = table("component", "version", "pinned")
        for name, version in report.versions.items():
            versions.add_row(name, version or "-", pinned.get(name) or "-")
        console.print(versions)
        for problem in report.problems:
            console.print(f"[red]refusing:[/red] {problem}", highlight=False)
        if report.ok:
            console.print(f"worker {settings.worker_id} is fit to take work")

    emit(data, as_json, render)
    if not report.ok:
        raise typer.Exit(int(ExitCode.FAILURE))


@app.command()
def run(
    config: ConfigOption = None,
    worker_id: IdOption = None,
    db: DbOption = None,
    slots: SlotsOption = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Override where checkouts live.")
    ] = None,
    logs_dir: Annotated[
        Path | None, typer.Option("--logs-dir", help="Override where run logs go.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the worker until SIGTERM: claim, run, verify, push, report."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = _config(
        config,
        worker_id=worker_id,
        queue_db=db,
        slots=slots,
        work_dir=work_dir,
        logs_dir=logs_dir,
    )
    worker = WorkerDaemon(settings, PhaseExecutor(settings))
    worker.install_signal_handlers()
    code = worker.run()
    if code:
        raise typer.Exit(code)
