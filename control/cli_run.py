"""`control dispatch`, and the commands around a run: status, watch, merge, cancel, retry.

Thin: each parses, calls `control.dispatch` / `control.state` / `control.integration`,
and renders: a live view on a terminal, plain log lines otherwise, JSON lines with
`--json`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from control.cli_io import JsonOption, console, emit
from control.dispatch import DEFAULT_RETENTION_DAYS, open_dispatch
from control.errors import ExitCode, NotFoundError, SuperagentError, UsageError
from control.integration import FinalCheck
from control.inventory import Worker, load_inventory
from control.notify.service import Notifier
from control.orchestrator import Orchestrator, RunOutcome, Settings
from control.paths import default_home
from control.spec import Spec, load_spec
from control.state import RunRow, StateStore
from control.transport import Transports

STATE_COLOURS = {
    "waiting": "dim",
    "sending": "yellow",
    "dispatched": "cyan",
    "done": "green",
    "dead": "red",
    "cancelled": "magenta",
}


def default_state_db() -> Path:
    return Path(os.environ.get("SUPERAGENT_STATE_DB") or default_home() / "state.db")


InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        envvar="SUPERAGENT_INVENTORY",
        help="The fleet: an Ansible inventory directory (hosts of group `workers`).",
    ),
]
StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state",
        envvar="SUPERAGENT_STATE_DB",
        show_default="$SUPERAGENT_STATE_DB or $SUPERAGENT_HOME/state.db",
        help="The orchestrator's state database.",
    ),
]
RunArgument = Annotated[
    str | None, typer.Argument(help="Run id (default: the latest run).", show_default=False)
]


def workers_from(inventory: Path | None) -> list[Worker]:
    if inventory is None:
        raise UsageError("no inventory: pass --inventory DIR or set SUPERAGENT_INVENTORY")
    return load_inventory(inventory)


def _open_store(state: Path | None) -> StateStore:
    state = state or default_state_db()
    if not state.exists():
        raise NotFoundError(f"{state}: no state database (nothing was dispatched yet)")
    return StateStore(state)


def _run(store: StateStore, run_id: str | None) -> RunRow:
    if run_id is not None:
        return store.run(run_id)
    latest = store.latest_run()
    if latest is None:
        raise NotFoundError(f"{store.path}: no run yet")
    return latest


def _spec_of(run: RunRow) -> Spec:
    return load_spec(Path(run.spec_path))


# -- rendering ---------------------------------------------------------------------


def _phase_table(store: StateStore, run_id: str) -> Table:
    table = Table("phase", "state", "worker", "attempt", "commit", "cost", "reason", expand=False)
    now = time.time()
    for phase_id, row in store.phases(run_id).items():
        colour = STATE_COLOURS.get(row.state, "")
        waiting = ""
        if row.state == "waiting" and row.not_before and row.not_before > now:
            waiting = f" (retry in {row.not_before - now:.0f}s)"
        table.add_row(
            phase_id,
            Text(row.state + waiting, style=colour),
            row.worker or "-",
            f"{row.attempt}" + (f" ({row.failures} failed)" if row.failures else ""),
            (row.commit_sha or "")[:10],
            f"${row.cost_usd:.2f}" if row.cost_usd else "",
            (row.reason or "")[:80],
        )
    return table


def _workers_line(store: StateStore) -> Text:
    parts = []
    for name, row in sorted(store.workers().items()):
        style = "green" if row.status == "up" and not row.drained else "red"
        drained = " (drained)" if row.drained else ""
        parts.append(Text(f"{name}: {row.status}{drained}", style=style))
    return Text("  ").join(parts) if parts else Text("no worker seen yet", style="dim")


def _live_view(store: StateStore, run_id: str, started: float) -> Group:
    phases = store.phases(run_id)
    done = sum(1 for r in phases.values() if r.state == "done")
    cost = sum(r.cost_usd for r in phases.values())
    header = Text(
        f"run {run_id}   {done}/{len(phases)} phases done   "
        f"elapsed {time.time() - started:.0f}s   cost ${cost:.2f}   "
        f"{store.run_status(store.run(run_id))}",
        style="bold",
    )
    return Group(header, _phase_table(store, run_id), _workers_line(store))


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
    }


# -- commands ----------------------------------------------------------------------


def dispatch(
    spec: Annotated[Path, typer.Argument(help="The spec file (JSON).")],
    inventory: InventoryOption = None,
    state: StateOption = None,
    new_run: Annotated[
        bool, typer.Option("--new-run", help="Start a new run instead of resuming.")
    ] = False,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            envvar="SUPERAGENT_AGENT",
            help="Use this agent backend for every phase (claude-code, command, replay).",
        ),
    ] = None,
    replay_dir: Annotated[
        Path | None, typer.Option("--replay-dir", help="Recordings per phase for the replay agent.")
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
    as_json: JsonOption = False,
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
    state = state or default_state_db()
    assert inventory is not None  # workers_from refused a missing one
    notifier = Notifier.for_fleet(inventory, workers, state)
    run = open_dispatch(
        spec,
        workers,
        state,
        new_run=new_run,
        settings=settings,
        repo_url=repo,
        agent={"backend": agent} if agent else None,
        replay_dir=replay_dir,
        transports=Transports(inventory=inventory),
        emit=None if live else printer,
        merge=not no_merge,
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
                _live_view(run.store, run.run_id, started),
                console=console,
                refresh_per_second=4,
                transient=False,
            ) as view:
                outcome = run.drive(
                    stop,
                    timeout_s=timeout,
                    on_tick=lambda: view.update(_live_view(run.store, run.run_id, started)),
                )
                view.update(_live_view(run.store, run.run_id, started))
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


def status(
    run_id: RunArgument = None, state: StateOption = None, as_json: JsonOption = False
) -> None:
    """Phases of a run: state, worker, attempts, commit, cost, why it failed."""
    store = _open_store(state)
    try:
        run = _run(store, run_id)
        phases = store.phases(run.id)
        data = {
            "run": run.id,
            "status": run.status,
            "driver": store.live_driver(run),
            "spec": run.spec_path,
            "reason": run.reason,
            "merge_branch": run.merge_branch,
            "merge_commit": run.merge_commit,
            "summary": run.summary,
            "phases": {p: r.__dict__ for p, r in phases.items()},
            "workers": {n: w.__dict__ for n, w in store.workers().items()},
        }

        def render() -> None:
            console.print(
                f"run {run.id} ({store.run_status(run)}) of {run.spec_path}", highlight=False
            )
            console.print(_phase_table(store, run.id))
            console.print(_workers_line(store))
            if run.reason:
                console.print(f"reason: {run.reason}", highlight=False)
            if run.merge_branch:
                console.print(f"merged: {run.merge_branch} at {run.merge_commit}", highlight=False)
            if run.summary:
                console.print(f"pruned; summary: {json.dumps(run.summary)}", highlight=False)

        emit(data, as_json, render)
    finally:
        store.close()


def watch(
    run_id: RunArgument = None,
    state: StateOption = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Refresh seconds.")] = 1.0,
) -> None:
    """Follow a run live (read-only) until it ends; Ctrl-C stops watching, not the run."""
    store = _open_store(state)
    try:
        run = _run(store, run_id)
        started = run.created_at
        with Live(_live_view(store, run.id, started), console=console) as view:
            while store.run(run.id).status == "running":
                time.sleep(interval)
                view.update(_live_view(store, run.id, started))
            view.update(_live_view(store, run.id, started))
    finally:
        store.close()


def merge(
    run_id: RunArgument = None,
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
    store = _open_store(state)
    transports = Transports(inventory=inventory)
    try:
        run = _run(store, run_id)
        spec = _spec_of(run)
        orchestrator = Orchestrator(
            spec,
            workers,
            store,
            transports,
            Settings(poll_interval_s=poll_interval),
            repo_url=repo or spec.repo.url,
        )
        orchestrator.attach(run.id)
        orchestrator.repair_branches()  # merge what the run accepted, wherever a branch moved
        result = FinalCheck(orchestrator, verify=not no_verify).run(
            deadline=None if timeout is None else time.monotonic() + timeout,
            wait_for_worker_s=wait,
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


def retry(
    phases: Annotated[list[str], typer.Argument(help="Phases to give fresh attempts.")],
    run_id: Annotated[str | None, typer.Option("--run", help="Run id (default: latest).")] = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give dead or cancelled phases fresh attempts; the next `control dispatch` runs them."""
    store = _open_store(state)
    try:
        run = _run(store, run_id)
        rows = store.phases(run.id)
        for phase_id in phases:
            if phase_id not in rows:
                raise NotFoundError(f"run {run.id} has no phase {phase_id!r}")
            if rows[phase_id].state not in ("dead", "cancelled"):
                raise UsageError(f"phase {phase_id!r} is {rows[phase_id].state}, not dead")
        for phase_id in phases:
            store.reset_phase(run.id, phase_id, "retry requested")
        if run.status != "running":
            store.reopen_run(run.id)
    finally:
        store.close()
    emit(
        {"run": run.id, "retried": phases},
        as_json,
        lambda: console.print(
            f"{', '.join(phases)} will run again; resume with `control dispatch SPEC`"
        ),
    )


def cancel(
    phases: Annotated[
        list[str] | None, typer.Argument(help="Phases to cancel (default: the whole run).")
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Run id (default: latest).")] = None,
    inventory: InventoryOption = None,
    state: StateOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel phases (or a whole run), stopping their agents on the workers."""
    store = _open_store(state)
    transports = Transports()
    try:
        run = _run(store, run_id)
        rows = store.phases(run.id)
        targets = phases or [p for p, r in rows.items() if r.state not in ("done", "cancelled")]
        unknown = sorted(set(targets) - set(rows))
        if unknown:
            raise NotFoundError(f"run {run.id} has no phase {', '.join(unknown)}")
        workers = {w.name: w for w in workers_from(inventory)} if inventory else {}
        # Recorded first, with a cancel owed to each worker: no liveness rule undoes
        # it, and what cannot be delivered now is delivered by a later tick or command.
        owed = store.cancel_phases(run.id, targets, "cancelled by the operator")
        if not phases:
            store.finish_run(run.id, "cancelled", "cancelled by the operator")
        stopped, unstopped = [], []
        for key in owed:
            attempt = store.attempt_by_key(key)
            worker = workers.get(attempt.worker) if attempt else None
            try:
                if worker is None:
                    raise SuperagentError("not in the inventory given")
                transports.cancel(worker, key)
            except SuperagentError:
                unstopped.append(key)
                continue
            store.mark_cancel_sent(key)
            stopped.append(key)
    finally:
        transports.close()
        store.close()
    note = " (their agents are stopped when their workers are next reached)" if unstopped else ""
    emit(
        {"run": run.id, "cancelled": targets, "stopped": stopped},
        as_json,
        lambda: console.print(f"cancelled {', '.join(targets) or 'nothing'}{note}"),
    )


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
    dispatch` does the same at start with $SUPERAGENT_RETENTION_DAYS (default 180)."""
    store = _open_store(state)
    try:
        pruned = store.gc(older_than)
    finally:
        store.close()
    emit(
        pruned.__dict__,
        as_json,
        lambda: console.print(
            f"pruned {pruned.runs} run(s) ({pruned.events} events) and {pruned.answers} "
            f"answer(s) older than {older_than:g} days"
        ),
    )


def register(app: typer.Typer) -> None:
    for command in (dispatch, status, watch, merge, retry, cancel, gc):
        app.command()(command)
