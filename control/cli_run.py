"""`control dispatch`, and the commands around a run: runs, status, watch, merge, retry, cancel.

Thin: each parses, calls `control.dispatch` / `control.state` / `control.integration`,
and renders (see `control.cli_view`): a live view on a terminal, plain log lines
otherwise, JSON lines with `--json`. A run is always chosen with `--run` (default:
the latest), through `cli_io.pick_run`.
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

from control import operations
from control.checkpoint_gc import forget_finished_checkpoints
from control.cli_io import (
    InventoryOption,
    JsonLinesOption,
    JsonOption,
    RunOption,
    SpecArgument,
    StateOption,
    agent_option,
    console,
    emit,
    open_store,
    pick_run,
    state_path,
    workers_from,
)
from control.cli_view import (
    live_view,
    money,
    money_line,
    phase_summary,
    phase_table,
    table,
    workers_line,
)
from control.dispatch import DEFAULT_RETENTION_DAYS, DriverLease, driver_ttl, open_dispatch
from control.errors import ExitCode, UnavailableError
from control.integration import FinalCheck
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


# -- commands ----------------------------------------------------------------------


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
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.05, help="Seconds between ticks.")
    ] = 2.0,
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
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=1, help="Give up after this many seconds.")
    ] = None,
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
    workers = workers_from(inventory)
    settings = Settings(
        poll_interval_s=poll_interval,
        heartbeat_timeout_s=heartbeat_timeout,
        max_concurrent=max_concurrent,
        stagger_s=stagger,
        retry_backoff_s=retry_backoff,
    )
    live = sys.stdout.isatty() and not as_json
    printer = _event_printer(as_json)
    state = state_path(state)
    assert inventory is not None  # workers_from refused a missing one
    notifier = Notifier.for_fleet(inventory, workers, state)
    run = open_dispatch(
        spec,
        workers,
        state_path(state),
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
def runs(
    state: StateOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The runs of the state database, newest first: status, phases done, the live
    `control dispatch` driving each (process@host), spec. A running run that nothing
    drives is `interrupted`: `control dispatch SPEC` resumes it."""
    store = open_store(state)
    try:
        found = [(run, store.phases(run.id), store.live_driver(run)) for run in store.runs(limit)]
    finally:
        store.close()
    data: list[dict[str, Any]] = [
        {
            "run": run.id,
            "status": run.status,
            "spec": run.spec_path,
            "created_at": run.created_at,
            "finished_at": run.finished_at,
            "phases": len(phases),
            "done": sum(1 for r in phases.values() if r.state == "done"),
            "driver": driver,  # the `control dispatch` driving it now, if any
            "reason": run.reason,
        }
        for run, phases, driver in found
    ]

    def render() -> None:
        if not data:
            console.print(f"{state_path(state)}: no run yet", highlight=False)
            return
        shown = table("run", "status", "done", "started", "driver", "spec")
        for row in data:
            driver = row["driver"]
            interrupted = row["status"] == "running" and driver is None
            shown.add_row(
                row["run"],
                "interrupted" if interrupted else row["status"],
                f"{row['done']}/{row['phases']}",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"])),
                f"{driver.get('pid')}@{driver.get('host')}" if driver else "-",
                row["spec"],
            )
        console.print(shown)

    emit(data, as_json, render)


@app.command()
def status(
    run_id: RunOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Phases of a run in dependency order: state, worker, attempts, commit, cost, and
    why each waits or failed."""
    store = open_store(state)
    try:
        run = pick_run(store, run_id)
        data = {
            "run": run.id,
            "status": run.status,
            "driver": store.live_driver(run),
            "spec": run.spec_path,
            "reason": run.reason,
            "merge_branch": run.merge_branch,
            "merge_commit": run.merge_commit,
            "summary": run.summary,
            "pins": run.pins,
            "phases": phase_summary(store, run),
            "workers": {n: w.__dict__ for n, w in store.workers().items()},
            "money": money(store, run),
        }

        def render() -> None:
            console.print(
                f"run {run.id} ({store.run_status(run)}) of {run.spec_path}", highlight=False
            )
            console.print(phase_table(store, run))
            console.print(workers_line(store))
            console.print(money_line(data["money"]), highlight=False, markup=False)
            if run.reason:
                console.print(f"reason: {run.reason}", highlight=False, markup=False)
            if run.merge_branch:
                console.print(f"merged: {run.merge_branch} at {run.merge_commit}", highlight=False)
            if run.summary:
                console.print(f"pruned; summary: {json.dumps(run.summary)}", highlight=False)

        emit(data, as_json, render)
    finally:
        store.close()


@app.command()
def watch(
    run_id: RunOption = None,
    state: StateOption = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Refresh seconds.")] = 1.0,
) -> None:
    """Follow a run live (read-only) until it ends; Ctrl-C stops watching, not the run."""
    store = open_store(state)
    try:
        run = pick_run(store, run_id)
        started = run.created_at
        with Live(live_view(store, run.id, started), console=console) as view:
            while store.run(run.id).status == "running":
                time.sleep(interval)
                view.update(live_view(store, run.id, started))
            view.update(live_view(store, run.id, started))
    finally:
        store.close()


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
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.05, help="Seconds between polls.")
    ] = 1.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=1, help="Give up after this many seconds.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build (or rebuild) the integration branch of a finished run, on a worker.

    A worker merges every phase branch at its verified commit in dependency order, runs
    each distinct verify command once on the result and pushes the branch; this host
    only checks the pushed branch on the remote. Nothing of the repository runs here.
    """
    workers = workers_from(inventory)
    store = open_store(state)
    transports = Transports(inventory=inventory)
    try:
        run = pick_run(store, run_id)
        spec = load_spec(Path(run.spec_path))
        url = repo or run_repo(run) or spec.repo.url
        require_repo_url(url, "repo")
        settings = Settings(poll_interval_s=poll_interval)
        # As the run's one live driver: a dispatch of the same run refuses to start
        # meanwhile, and this merge refuses while one runs.
        with DriverLease(store, run.id, driver_ttl(settings)) as lease:
            orchestrator = Orchestrator(spec, workers, store, transports, settings, repo_url=url)
            orchestrator.attach(run.id)
            orchestrator.repair_branches()  # merge what the run accepted, wherever it moved
            result = FinalCheck(orchestrator, verify=not no_verify).run(
                deadline=None if timeout is None else time.monotonic() + timeout,
                wait_for_worker_s=wait,
                on_step=lease.renew,
            )
    finally:
        transports.close()
        store.close()
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


@app.command()
def retry(
    phases: Annotated[list[str], typer.Argument(help="Phases to give fresh attempts.")],
    run_id: RunOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give dead or cancelled phases fresh attempts; the next `control dispatch` runs them."""
    store = open_store(state)
    try:
        run = pick_run(store, run_id)
        store.retry_phases(run.id, phases, "retry requested")
    finally:
        store.close()
    emit(
        {"run": run.id, "retried": phases},
        as_json,
        lambda: console.print(
            f"{', '.join(phases)} will run again; resume with `control dispatch SPEC`"
        ),
    )


@app.command()
def cancel(
    phases: Annotated[
        list[str] | None, typer.Argument(help="Phases to cancel (default: the whole run).")
    ] = None,
    run_id: RunOption = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel phases (or a whole run), stopping their agents on the workers."""
    store = open_store(state)
    transports = Transports(inventory=inventory)
    try:
        run = pick_run(store, run_id)
        fleet = {w.name: w for w in workers_from(inventory)} if inventory else {}
        done = operations.cancel(store, transports, fleet, run, phases)
    finally:
        transports.close()
        store.close()
    note = " (their agents are stopped when their workers are next reached)"
    emit(
        {"run": run.id, "cancelled": done.cancelled, "stopped": done.stopped},
        as_json,
        lambda: console.print(
            f"cancelled {', '.join(done.cancelled) or 'nothing'}{note if done.unstopped else ''}"
        ),
    )


@app.command()
def gc(
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            min=0,
            help="Prune finished runs (and answered free-form tasks) older than these days.",
        ),
    ] = DEFAULT_RETENTION_DAYS,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prune the state database: finished runs past the age keep a summary (status,
    phase counts, cost, merge) and lose their phases, attempts and events. `control
    dispatch` does the same at start with $SUPERAGENT_RETENTION_DAYS (default 180).
    Then delete, on their remotes, the checkpoints of runs that are finished (done,
    cancelled, or failed and pruned); a remote that cannot be reached fails the command
    after the rest is done."""
    store = open_store(state)
    try:
        pruned = store.gc(older_than)
        forgotten = forget_finished_checkpoints(store, store.path.parent / "git")
    finally:
        store.close()
    deleted = sum(len(refs) for refs in forgotten.deleted.values())
    emit(
        {**pruned.__dict__, "checkpoints_deleted": forgotten.deleted,
         "checkpoints_failed": forgotten.failed},
        as_json,
        lambda: console.print(
            f"pruned {pruned.runs} run(s) ({pruned.events} events) and {pruned.answers} "
            f"answer(s) older than {older_than:g} days; deleted {deleted} checkpoint(s) of "
            f"{len(forgotten.deleted)} finished run(s)"
        ),
    )  # fmt: skip
    if forgotten.failed:
        url, why = next(iter(forgotten.failed.items()))
        raise UnavailableError(f"cannot delete the checkpoints on {url}: {why}")
