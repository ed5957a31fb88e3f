"""What each page of the dashboard shows, read from the state database (read-only).

Plain dicts of plain values: the templates escape every string, and the live stream
sends the same values as JSON. Nothing here writes; agent-written text (summaries,
reasons, branch names, verify output) is carried as data and cut to size.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from control.health import HEARTBEAT_TIMEOUT_S, off_pins
from control.inventory import Worker
from control.spec.model import DEFAULT_ESTIMATE_MINUTES
from control.state import AttemptRow, PhaseRow, RunRow, StateStore
from control.web.graph import Layout, layout

TEXT_LIMIT = 2000  # characters of one agent-written value shown on a page
OPEN = ("sending", "dispatched")
ACTIVITY_HOURS = 6


def cut(value: Any, limit: int = TEXT_LIMIT) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _driver(store: StateStore, run: RunRow) -> str:
    driver = store.live_driver(run)
    return f"{driver.get('pid')}@{driver.get('host')}" if driver else ""


def runs_list(store: StateStore, now: float, limit: int = 200) -> list[dict[str, Any]]:
    """Every run, newest first: spec, state, live driver, progress, elapsed, cost."""
    runs = store.runs(limit)
    totals = store.phase_totals([run.id for run in runs])
    out = []
    for run in runs:
        phases, done, cost = totals.get(run.id, (0, 0, 0.0))
        if run.summary and not phases:  # pruned by gc: its summary is what remains
            counts = run.summary.get("phases", {}) if isinstance(run.summary, dict) else {}
            phases, done = sum(counts.values()), int(counts.get("done", 0))
            cost = float(run.summary.get("cost_usd", 0.0))
        out.append(
            {
                "id": run.id,
                "spec": run.spec_path,
                "state": store.run_state(run),
                "driver": _driver(store, run),
                "phases": phases,
                "done": done,
                "elapsed_s": (run.finished_at or now) - run.created_at,
                "cost_usd": cost,
                "created_at": run.created_at,
                "reason": cut(run.reason, 300),
            }
        )
    return out


def _estimates(run: RunRow) -> dict[str, float]:
    spec = run.spec if isinstance(run.spec, dict) else {}
    default = (spec.get("defaults") or {}).get("estimate_minutes", DEFAULT_ESTIMATE_MINUTES)
    return {
        str(p.get("id")): float(p.get("estimate_minutes") or default) for p in run.spec_phases()
    }


def _actual_s(attempts: Sequence[AttemptRow], row: PhaseRow, now: float) -> float | None:
    """From its first attempt's start to its end (or to now while it runs)."""
    if not attempts:
        return None
    end = row.updated_at if row.state not in OPEN else now
    return max(0.0, end - attempts[0].created_at)


def run_header(
    store: StateStore, run: RunRow, now: float, phases: Mapping[str, PhaseRow] | None = None
) -> dict[str, Any]:
    """The run's line at the top of its pages: state, driver, progress, cost, elapsed."""
    phases = store.phases(run.id) if phases is None else phases
    return {
        "id": run.id,
        "spec": run.spec_path,
        "state": store.run_state(run),
        "driver": _driver(store, run),
        "done": sum(1 for r in phases.values() if r.state == "done"),
        "phases": len(phases),
        "cost_usd": round(sum(r.cost_usd for r in phases.values()), 4),
        "elapsed_s": round((run.finished_at or now) - run.created_at),
        "reason": cut(run.reason, 300),
        "merge_branch": cut(run.merge_branch, 300),
        "merge_commit": run.merge_commit or "",
    }


def run_page(store: StateStore, run_id: str, now: float) -> dict[str, Any]:
    """A run: its graph laid out, each phase's state, worker, estimate and actual time."""
    run = store.run(run_id)
    rows = store.phases(run.id)
    estimates = _estimates(run)
    depends_on = {p: d for p, d in run.depends_on().items() if p in rows}
    for phase in rows:
        depends_on.setdefault(phase, ())
    drawn: Layout = layout(
        {p: [d for d in deps if d in depends_on] for p, deps in depends_on.items()},
        {p: estimates.get(p, DEFAULT_ESTIMATE_MINUTES) for p in depends_on},
    )
    by_phase: dict[str, list[AttemptRow]] = {}
    for attempt in store.attempts(run.id):
        by_phase.setdefault(attempt.phase_id, []).append(attempt)
    phases = {
        p: {
            "state": r.state,
            "worker": r.worker or "",
            "attempt": r.attempt,
            "estimate_min": estimates.get(p, DEFAULT_ESTIMATE_MINUTES),
            "actual_s": _actual_s(by_phase.get(p, []), r, now),
            "cost_usd": r.cost_usd,
            "reason": cut(r.reason, 300),
        }
        for p, r in rows.items()
    }
    return {
        "run": run_header(store, run, now, rows),
        "layout": drawn,
        "phases": phases,
        "workers": workers_brief(store, now),
    }


def phase_page(store: StateStore, run_id: str, phase_id: str) -> dict[str, Any]:
    """One phase: what the spec asked, and every attempt with its worker, reason,
    verify output, cost, branch and commit."""
    run = store.run(run_id)
    row = store.named_phases(run.id, [phase_id])[phase_id]
    spec = next((p for p in run.spec_phases() if p.get("id") == phase_id), {})
    attempts = []
    for attempt in store.attempts(run.id, phase_id):
        answer = attempt.answer()
        attempts.append(
            {
                "attempt": attempt.attempt,
                "worker": attempt.worker,
                "state": attempt.state,
                "sent": attempt.message_id is not None,
                "started_at": attempt.created_at,
                "finished_at": attempt.finished_at,
                "reason": cut(attempt.reason),
                "summary": cut(answer.summary if answer else None),
                "commit": cut(answer.commit if answer else None, 80),
                "push_ref": cut(attempt.push_ref, 300),
                "cost_usd": answer.cost_usd if answer and answer.cost_known else None,
                "verify": [
                    {
                        "command": cut(v.command, 300),
                        "exit_code": v.exit_code,
                        "output": cut(v.output_tail),
                    }
                    for v in (answer.verify if answer else ())
                ],
            }
        )
    return {
        "run": run_header(store, run, time.time()),
        "phase": {
            "id": phase_id,
            "title": cut(spec.get("title"), 300),
            "state": row.state,
            "worker": row.worker or "",
            "branch": cut(row.branch, 300),
            "commit": row.commit_sha or "",
            "cost_usd": row.cost_usd,
            "summary": cut(row.summary),
            "reason": cut(row.reason),
            "depends_on": list(spec.get("depends_on") or ()),
        },
        "attempts": attempts,
        "running": row.state in OPEN,
    }


def workers_brief(store: StateStore, now: float) -> dict[str, dict[str, Any]]:
    """Each worker as the orchestrator last saw it (the live part of the pages)."""
    out = {}
    for name, w in sorted(store.workers().items()):
        out[name] = {
            "status": ("drained" if w.drained and w.status == "up" else w.status),
            "beat_age_s": None if w.beat_seen_at is None else round(now - w.beat_seen_at),
            "reason": cut(w.reason, 300),
        }
    return out


def snapshot(store: StateStore, run_id: str | None, now: float) -> dict[str, Any]:
    """What the live stream sends after events: the run's phases and the workers."""
    data: dict[str, Any] = {"workers": workers_brief(store, now)}
    if run_id is not None:
        run = store.run(run_id)
        rows = store.phases(run.id)
        data["run"] = run_header(store, run, now, rows)
        data["phases"] = {
            p: {"state": r.state, "worker": r.worker or "", "attempt": r.attempt}
            for p, r in rows.items()
        }
    return data


def fleet_page(
    store: StateStore,
    fleet: Sequence[Worker],
    pins: Mapping[str, Mapping[str, str]],
    now: float,
    polled: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every worker: reachability, heartbeat age, versions against the pins, slots in
    use, current phase, refusals, and its attempts per hour over the last hours.

    `polled`: the dashboard's own latest health reports (`FleetWatch`), fresher than
    what the orchestrator last stored, which win where they exist."""
    seen = store.workers()
    since = now - ACTIVITY_HOURS * 3600
    busy: dict[str, list[str]] = {}
    activity: dict[str, list[int]] = {}
    for a in store.attempts_since(since):
        hour = min(ACTIVITY_HOURS - 1, int((a.created_at - since) // 3600))
        activity.setdefault(a.worker, [0] * ACTIVITY_HOURS)[hour] += 1
        if a.state in OPEN:
            busy.setdefault(a.worker, []).append(f"{a.phase_id} ({a.run_id})")
    names = [w.name for w in fleet] + sorted(set(seen) - {w.name for w in fleet})
    slots = {w.name: w.slots for w in fleet}
    out = []
    for name in names:
        row = seen.get(name)
        age = None if row is None or row.beat_seen_at is None else now - row.beat_seen_at
        problems = off_pins(row.versions if row else None, pins.get(name))
        if row is not None and row.beat_status == "refusing":
            problems.insert(0, f"refusing: {cut(row.reason, 300)}")
        out.append(
            {
                "name": name,
                "in_inventory": name in slots,
                "status": "never seen" if row is None else row.status,
                "reachable": row is not None and not row.unreachable,
                "beat_age_s": None if age is None else round(age),
                "stale": age is not None and age > HEARTBEAT_TIMEOUT_S,
                "beat_status": (row.beat_status or "") if row else "",
                "drained": bool(row and row.drained),
                "versions": dict(row.versions or {}) if row else {},
                "slots": slots.get(name),
                "in_use": len(busy.get(name, [])),
                "current": busy.get(name, []),
                "problems": [cut(p, 300) for p in problems],
                "activity": activity.get(name, [0] * ACTIVITY_HOURS),
            }
        )
        report = (polled or {}).get(name)
        if report is not None:
            _polled(out[-1], report)
    return out


def _polled(row: dict[str, Any], report: Mapping[str, Any]) -> None:
    """A worker's row with what the dashboard's own poll found (`health_report`)."""
    row["reachable"] = bool(report.get("reachable"))
    if row["status"] == "never seen":  # by the orchestrator; this poll did see it
        row["status"] = "up" if row["reachable"] and not report.get("problems") else "down"
    if "heartbeat_age_s" in report:
        row["beat_age_s"] = round(float(report["heartbeat_age_s"]))
        row["stale"] = row["beat_age_s"] > HEARTBEAT_TIMEOUT_S
    row["beat_status"] = str(report.get("status") or row["beat_status"])
    row["versions"] = dict(report.get("versions") or row["versions"])
    row["problems"] = [cut(p, 300) for p in report.get("problems", [])]
    if report.get("current"):
        row["current"] = [cut(c, 300) for c in report["current"]]
        row["in_use"] = len(row["current"])


def _bar(label: str, value: float, href: str = "") -> dict[str, Any]:
    return {"label": label, "value": round(value, 4), "href": href}


def _href(*parts: str) -> str:
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def costs_page(store: StateStore, now: float, days: int = 30) -> dict[str, Any]:
    """Cost per run and per phase, and the fleet's spend per day: bars to draw."""
    per_day: dict[str, float] = {}
    for at, cost in store.run_costs_since(now - days * 86400):
        day = time.strftime("%Y-%m-%d", time.gmtime(at))
        per_day[day] = per_day.get(day, 0.0) + cost
    runs = runs_list(store, now, limit=30)
    return {
        "days": [_bar(day, cost) for day, cost in sorted(per_day.items())],
        "runs": [_bar(r["id"], r["cost_usd"], _href("runs", r["id"])) for r in runs],
        "phases": [
            _bar(f"{phase} ({run})", cost, _href("runs", run, "phases", phase))
            for run, phase, cost in store.costliest_phases(30)
        ],
    }
