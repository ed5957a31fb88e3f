"""`control dispatch` and `control merge`: the commands that drive a run on the fleet.

Thin: each parses, calls `control.driver` / `control.integration`, and renders (see
`control.cli_view`): a live view on a terminal, plain log lines otherwise, JSON lines
with `--json`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from control import cli_io
from control.cli_io import (
    InventoryOption,
    JsonLinesOption,
    JsonOption,
    PollIntervalOption,
    RunOption,
    SpecArgument,
    StateOption,
    TimeoutOption,
    agent_option,
    console,
    emit,
)
from control.cli_view import live_view
from control.driver import DriverLease, driver_ttl, open_run
from control.errors import ConflictError, ExitCode
from control.integration import FinalCheck
from control.merge_queue import Reopened
from control.names import require_repo_url
from control.notify.service import Notifier
from control.orchestrator import Orchestrator, RunOutcome, Settings
from control.spec import load_spec
from control.state import RunRow, StateStore
from control.transport import Transports

app = typer.Typer()


def _event_printer(as_json: bool) -> Callable[[str, dict[str, Any]], None]:
    def plain(kind: str, data: dict[str, Any]) -> None:
        stamp = time.strftime("%H:%M:%S")
        detail = " ".join(f"{k}={v}" for k, v in data.items() if v not in (None, ""))
        console.print(f"{stamp} {kind} {detail}", highlight=False, markup=False)

    def jsonl(kind: str, data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps({"event": kind, "at": time.time(), **data}) + "\n")
        sys.stdout.flush()

    return jsonl if as_json else plain


def _summary(outcome: RunOutcome, store: StateStore) -> dict[str, Any]:
    run = store.run(outcome.run_id)
    return {
        "run": outcome.run_id,
        "status": outcome.status,
        "reason": outcome.reason,
        "dead": outcome.dead,
        "merge_branch": run.merge_branch,
        "merge_commit": run.merge_commit,
        "phases": {
            p: {"state": r.state, "worker": r.worker, "commit": r.commit_sha, "attempt": r.attempt}
            for p, r in outcome.phases.items()
        },
        "cost_usd": round(sum(r.cost_usd for r in outcome.phases.values()), 4),
        "budget_usd": run.budget_usd,
    }


@app.command()
def dispatch(
    spec: SpecArgument,
    inventory: InventoryOption = None,
    state: StateOption = None,
    new_run: Annotated[
        bool, typer.Option("--new-run", help="Start a new run instead of resuming.")
    ] = False,
    agent: Annotated[
        str | None,
        agent_option("Use this agent backend for every phase.", envvar="SUPERAGENT_AGENT"),
    ] = None,
    replay_dir: Annotated[
        Path | None,
        typer.Option(
            "--replay-dir",
            envvar="SUPERAGENT_REPLAY_DIR",
            show_envvar=True,
            help="Recordings per phase for the replay agent.",
        ),
    ] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", help="Use this git remote instead of the spec's.")
    ] = None,
    no_merge: Annotated[
        bool, typer.Option("--no-merge", help="Do not build the integration branch at the end.")
    ] = False,
    poll_interval: PollIntervalOption = 2.0,
    heartbeat_timeout: Annotated[
        float, typer.Option("--heartbeat-timeout", min=1, help="Seconds of silence = down.")
    ] = 60.0,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, help="Agent runs at once, fleet-wide.")
    ] = None,
    retry_backoff: Annotated[
        float,
        typer.Option("--retry-backoff", min=0, help="Seconds before the first retry (doubles)."),
    ] = 15.0,
    stagger: Annotated[
        float, typer.Option("--stagger", min=0, help="Seconds between two dispatches.")
    ] = 0.0,
    timeout: TimeoutOption = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            min=0.01,
            help="The most the run may spend, in US dollars (overrides the spec's budget_usd; "
            "raise it to resume a run its budget stopped).",
        ),
    ] = None,
    as_json: JsonLinesOption = False,
) -> None:
    """Validate SPEC, then run it across the fleet to merged branches (or resume its run).

    Exit 0 when every phase is done (and merged), 1 naming the dead phases and why.
    Interrupted (Ctrl-C, kill), the same command resumes: nothing is dispatched twice.
    """
    workers = cli_io.workers_from(inventory)
    settings = Settings(
        poll_interval_s=poll_interval,
        heartbeat_timeout_s=heartbeat_timeout,
        max_concurrent=max_concurrent,
        stagger_s=stagger,
        retry_backoff_s=retry_backoff,
    )
    live = sys.stdout.isatty() and not as_json
    printer = _event_printer(as_json)
    state = cli_io.state_path(state)
    assert inventory is not None  # workers_from refused a missing one
    notifier = Notifier.for_fleet(inventory, workers, state)
    run = open_run(
        spec,
        workers,
        cli_io.state_path(state),
        new_run=new_run,
        settings=settings,
        repo_url=repo,
        agent={"backend": agent} if agent else None,
        replay_dir=replay_dir,
        transports=Transports(inventory=inventory),
        emit=None if live else printer,
        merge=not no_merge,
        budget_usd=budget,
    )
    if notifier is not None:
        notifier.start()
    started = time.time()
    stop = threading.Event()
    verb = "resuming" if run.resumed else "started"
    if as_json:
        printer("run", {"run": run.run_id, "resumed": run.resumed, "workers": len(workers)})
    else:
        console.print(
            f"{verb} run {run.run_id} of {spec} on {len(workers)} worker(s)", highlight=False
        )
    try:
        if live:
            with Live(
                live_view(run.store, run.run_id, started),
                console=console,
                refresh_per_second=4,
                transient=False,
            ) as view:
                outcome = run.drive(
                    stop,
                    timeout_s=timeout,
                    on_tick=lambda: view.update(live_view(run.store, run.run_id, started)),
                )
                view.update(live_view(run.store, run.run_id, started))
        else:
            outcome = run.drive(stop, timeout_s=timeout)
        summary = _summary(outcome, run.store)
    finally:
        if notifier is not None:
            notifier.stop()  # what is due goes now; the rest waits in the outbox
        run.orchestrator.transports.close()
        run.store.close()

    def render() -> None:
        if outcome.status == "done":
            merged = summary["merge_branch"]
            where = f"; merged into {merged} at {summary['merge_commit'][:12]}" if merged else ""
            console.print(f"[green]run {outcome.run_id} done[/green]{where}", highlight=False)
        else:
            console.print(
                f"[red]run {outcome.run_id} failed:[/red] {outcome.reason}", highlight=False
            )

    emit(summary, as_json, render)
    if outcome.status != "done":
        raise typer.Exit(int(ExitCode.FAILURE))


@app.command()
def merge(
    run_id: RunOption = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the verify commands on the result.")
    ] = False,
    repo: Annotated[str | None, typer.Option("--repo", help="The git remote of the run.")] = None,
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="Seconds to wait for a worker to be up.")
    ] = 10.0,
    poll_interval: PollIntervalOption = 1.0,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build (or rebuild) the integration branch of a finished run, on a worker.

    A worker merges every phase branch at its verified commit in dependency order, runs
    each distinct verify command once on the result and pushes the branch; this host
    only checks the pushed branch on the remote. Nothing of the repository runs here.
    """
    workers = cli_io.workers_from(inventory)
    with cli_io.open_store(state) as store, cli_io.transports_to(inventory) as transports:
        run = cli_io.pick_run(store, run_id)
        spec = load_spec(Path(run.spec_path))
        url = repo or run_repo(run) or spec.repo.url
        require_repo_url(url, "repo")
        settings = Settings(poll_interval_s=poll_interval)
        # As the run's one live driver: a dispatch of the same run refuses to start
        # meanwhile, and this merge refuses while one runs.
        with DriverLease(store, run.id, driver_ttl(settings)) as lease:
            orchestrator = Orchestrator(spec, workers, store, transports, settings, repo_url=url)
            orchestrator.attach(run.id)
            result = FinalCheck(orchestrator, verify=not no_verify, rebuild=True).run(
                deadline=None if timeout is None else time.monotonic() + timeout,
                wait_for_worker_s=wait,
                on_step=lease.renew,
            )
            if isinstance(result, Reopened):
                why = (
                    f"the merge queue reopened {', '.join(result.phases)}: {result.reason}; "
                    "`control dispatch` redoes them"
                )
                store.finish_run(run.id, "failed", why)
                raise ConflictError(why)
    emit(
        {
            "branch": result.branch,
            "commit": result.commit,
            "merged": result.merged,
            "checks": result.checks,
            "worker": result.worker,
        },
        as_json,
        lambda: console.print(
            f"merged {len(result.merged)} phase(s) into {result.branch} at {result.commit[:12]} "
            f"on {result.worker}; {len(result.checks)} check(s) passed",
            highlight=False,
        ),
    )


def run_repo(run: RunRow) -> str | None:
    """The remote the run was dispatched against (its spec's, or `dispatch --repo`)."""
    repo = run.spec.get("repo") if isinstance(run.spec, dict) else None
    url = repo.get("url") if isinstance(repo, dict) else None
    return url if isinstance(url, str) else None
