"""How a run looks to people: the phase table, the workers line, the live view, the tables.

Phases are listed in dependency order (a phase after what it needs), and a waiting
phase says what it waits for: a prerequisite, a retry's back-off, or a dead
prerequisite that blocks it until `control retry`. Every table reads at 80 columns:
headers never shrink below their own width, long text folds in its own column.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from control.state import PhaseRow, RunRow, StateStore

STATE_COLOURS = {
    "waiting": "dim",
    "sending": "yellow",
    "dispatched": "cyan",
    "done": "green",
    "dead": "red",
    "cancelled": "magenta",
}
_STOPPED = ("dead", "cancelled")


def table(*columns: str, title: str | None = None, whole: Sequence[str] = ()) -> Table:
    """A table for 80 columns: when it must shrink, the widest columns give way first
    (rich's own rule), so headers and short values stay whole and long text wraps at
    words; a value alone wider than its column folds. No edges: every column counts.
    The columns named in `whole` never wrap: ids a user copies into the next command
    (a run id cut in two at 80 columns cannot be pasted).
    """
    made = Table(
        box=box.SIMPLE_HEAD,
        title=title,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
        expand=False,
    )
    for name in columns:
        made.add_column(name, overflow="fold", no_wrap=name in whole)
    return made


def dependency_order(
    rows: Mapping[str, PhaseRow], depends_on: Mapping[str, Sequence[str]]
) -> list[str]:
    """The phases, each after its prerequisites; ties in the spec's order."""
    order: list[str] = []
    placed: set[str] = set()
    pending = [p for p in depends_on if p in rows] + [p for p in rows if p not in depends_on]
    while pending:
        progress = [
            p for p in pending if all(d in placed or d not in rows for d in depends_on.get(p, ()))
        ]
        if not progress:  # a cycle cannot be in a run; list what is left as it comes
            progress = pending
        for phase in progress:
            order.append(phase)
            placed.add(phase)
        pending = [p for p in pending if p not in placed]
    return order


def waits_for(
    phase: str, rows: Mapping[str, PhaseRow], depends_on: Mapping[str, Sequence[str]], now: float
) -> str:
    """Why a waiting phase is not running yet, in a few words ('' when it is ready)."""
    row = rows[phase]
    if row.state != "waiting":
        return ""
    blockers = sorted(_blocked_by(phase, rows, depends_on))
    if blockers:
        return "blocked: " + ", ".join(f"{b} is {rows[b].state}" for b in blockers)
    if row.not_before and row.not_before > now:
        return f"retry in {row.not_before - now:.0f}s"
    open_deps = [d for d in depends_on.get(phase, ()) if d in rows and rows[d].state != "done"]
    if open_deps:
        return "waits for " + ", ".join(open_deps)
    return "ready"


def _blocked_by(
    phase: str, rows: Mapping[str, PhaseRow], depends_on: Mapping[str, Sequence[str]]
) -> set[str]:
    """The dead or cancelled phases upstream of `phase`, however far."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(depends_on.get(phase, ()))
    while stack:
        dep = stack.pop()
        if dep in seen or dep not in rows:
            continue
        seen.add(dep)
        if rows[dep].state in _STOPPED:
            found.add(dep)
        else:
            stack.extend(depends_on.get(dep, ()))
    return found


def phase_table(store: StateStore, run: RunRow) -> Table:
    rows = store.phases(run.id)
    depends_on = run.depends_on()
    now = time.time()
    made = table("phase", "state", "worker", "try", "detail")
    for phase_id in dependency_order(rows, depends_on):
        row = rows[phase_id]
        made.add_row(
            phase_id,
            Text(row.state, style=STATE_COLOURS.get(row.state, "")),
            row.worker or "-",
            str(row.attempt),
            _detail(row, waits_for(phase_id, rows, depends_on, now)),
        )
    return made


def _detail(row: PhaseRow, waiting: str) -> str:
    """What a person wants next to a phase: what it waits for, its commit, why it failed."""
    parts = [waiting] if waiting else []
    if row.commit_sha:
        parts.append(f"at {row.commit_sha[:10]}")
    if row.cost_usd:
        parts.append(f"${row.cost_usd:.2f}")
    if row.failures:
        parts.append(f"{row.failures} failed")
    if row.reason and row.state != "done":
        parts.append(row.reason[:300])
    return "; ".join(parts)


def phase_summary(store: StateStore, run: RunRow) -> dict[str, dict[str, Any]]:
    """The phases for `status --json`, in dependency order, each with what it waits for."""
    rows = store.phases(run.id)
    depends_on = run.depends_on()
    now = time.time()
    return {
        p: {**rows[p].__dict__, "waits_for": waits_for(p, rows, depends_on, now) or None}
        for p in dependency_order(rows, depends_on)
    }


def workers_line(store: StateStore) -> Text:
    parts = []
    for name, row in sorted(store.workers().items()):
        style = "green" if row.status == "up" and not row.drained else "red"
        drained = " (drained)" if row.drained else ""
        parts.append(Text(f"{name}: {row.status}{drained}", style=style))
    return Text("  ").join(parts) if parts else Text("no worker seen yet", style="dim")


def money(store: StateStore, run: RunRow) -> dict[str, Any]:
    """The run's money for `status`: budget, spent (and how much of it is estimated),
    reserved by attempts in flight, cost per worker and per account."""
    spending = store.spending(run.id)
    return {
        "budget_usd": run.budget_usd,
        **{f"{k}_usd": round(v, 6) for k, v in spending.items()},
        "by_worker": store.cost_by("worker", run.id),
        "by_account": store.cost_by("account", run.id),
    }


def money_line(data: dict[str, Any]) -> str:
    budget = data["budget_usd"]
    head = f"cost ${data['spent_usd']:.2f}" + (f" of ${budget:.2f}" if budget else "")
    if data["estimated_usd"]:
        head += f" (${data['estimated_usd']:.2f} estimated: no cost came back)"
    if data["reserved_usd"]:
        head += f", ${data['reserved_usd']:.2f} reserved in flight"
    workers = ", ".join(f"{w} ${c:.2f}" for w, c in data["by_worker"].items())
    accounts = ", ".join(f"{a} ${c:.2f}" for a, c in data["by_account"].items() if a != "-")
    return (
        head
        + (f"; per worker: {workers}" if workers else "")
        + (f"; per account: {accounts}" if accounts else "")
    )


def live_view(store: StateStore, run_id: str, started: float) -> Group:
    run = store.run(run_id)
    phases = store.phases(run_id)
    done = sum(1 for r in phases.values() if r.state == "done")
    cost = sum(r.cost_usd for r in phases.values())
    budget = f" of ${run.budget_usd:.2f}" if run.budget_usd else ""
    header = Text(
        f"run {run_id}   {done}/{len(phases)} phases done   "
        f"elapsed {time.time() - started:.0f}s   cost ${cost:.2f}{budget}   "
        f"{store.run_status(run)}",
        style="bold",
    )
    return Group(header, phase_table(store, run), workers_line(store))
