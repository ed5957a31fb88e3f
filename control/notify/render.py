"""Notices as words: one line per event with what a person needs to act on it, and the
title of a grouped message. Text from agents (reasons, log tails) stays data: cut to
size, and escaped for Slack, whose `<...>` would otherwise ping a channel or a link."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from control.notify.outbox import Notice

_LIMIT = 400

HEADLINES = {
    "run_created": "run started",
    "run_resumed": "run resumed",
    "run_done": "run done",
    "run_failed": "run FAILED",
    "run_cancelled": "run cancelled",
    "merge_failed": "merge FAILED",
    "phase_retry": "phase failed (will retry)",
    "phase_reopened": "phase sent back: it breaks the integration",
    "phase_dead": "phase DEAD",
    "phase_stuck": "phase waiting: no worker can take it",
    "worker_down": "worker lost",
    "worker_up": "worker back",
    "alert_pending": "work pending too long",
    "rate_limit_hold": "rate limit: dispatching held",
    "rate_limit_resumed": "rate limit over: dispatching resumed",
    "budget_stop": "run stopped by its budget",
    "budget_alarm": "burn-rate alarm: dispatching paused",
    "budget_resumed": "burn-rate pause over: dispatching resumed",
}


def _cut(value: Any, limit: int = _LIMIT) -> str:
    text = " ".join(str(value).split()) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def line(notice: Notice) -> str:
    """One event, as one or a few lines of plain text, ending with its dedupe key."""
    event = notice.payload.get("event", {})
    detail = event.get("detail") or {}
    context = notice.payload.get("context") or {}
    about = [
        f"{name} {event[key]}"
        for name, key in (("run", "run_id"), ("phase", "phase_id"), ("worker", "worker"))
        if event.get(key)
    ]
    head = HEADLINES.get(notice.kind, notice.kind)
    lines = [f"{head}: {', '.join(about)}" if about else head]
    lines += _DETAILS.get(notice.kind, _reason_and_tail)(detail, context)
    lines.append(f"[{notice.dedupe_key}]")
    return "\n".join(lines)


Details = dict[str, Any]


def _run_done(detail: Details, context: Details) -> list[str]:
    lines = [
        f"{context.get('done', '?')}/{context.get('phases', '?')} phases in "
        f"{_duration(context.get('duration_s'))}, cost ${context.get('cost_usd', 0):.2f}"
    ]
    if context.get("merge_branch"):
        commit = str(context.get("merge_commit") or "")[:12]
        lines.append(f"integration branch {context['merge_branch']} at {commit}")
    return lines


def _run_failed(detail: Details, context: Details) -> list[str]:
    lines = [f"why: {_cut(detail['reason'])}"] if detail.get("reason") else []
    for phase, dead in sorted((context.get("dead") or {}).items()):
        lines.append(f"- {phase}: {_cut(dead.get('reason') or 'dead', 200)}")
        if dead.get("log_tail"):
            lines.append(f"  log tail: {_cut(dead['log_tail'], 300)}")
    if "duration_s" in context:
        cost = context.get("cost_usd", 0)
        lines.append(f"after {_duration(context['duration_s'])}, cost ${cost:.2f}")
    return lines


def _pending(detail: Details, context: Details) -> list[str]:
    return [f"oldest message pending {detail.get('oldest_pending_s', '?')} s"]


def _hold(detail: Details, context: Details) -> list[str]:
    until = detail.get("until")
    when = time.strftime("%H:%M:%S UTC", time.gmtime(until)) if until else "?"
    return [f"until {when}: {_cut(detail.get('reason') or '')}"]


def _budget_stop(detail: Details, context: Details) -> list[str]:
    lines = [f"why: {_cut(detail['reason'])}"] if detail.get("reason") else []
    spent, budget = detail.get("spent_usd"), detail.get("budget_usd")
    if isinstance(spent, int | float) and isinstance(budget, int | float):
        lines.append(f"spent ${spent:.2f} of a ${budget:.2f} budget")
    return lines


def _worker(detail: Details, context: Details) -> list[str]:
    lines = [f"why: {_cut(detail['reason'])}"] if detail.get("reason") else []
    if context.get("versions"):
        versions = ", ".join(f"{k} {v}" for k, v in sorted(context["versions"].items()))
        lines.append(f"versions: {_cut(versions, 200)}")
    return lines


def _reason_and_tail(detail: Details, context: Details) -> list[str]:
    lines = [f"why: {_cut(detail['reason'])}"] if detail.get("reason") else []
    if context.get("log_tail"):
        lines.append(f"log tail: {_cut(context['log_tail'], 300)}")
    return lines


_DETAILS = {
    "run_done": _run_done,
    "run_failed": _run_failed,
    "run_cancelled": _run_failed,
    "merge_failed": _run_failed,
    "alert_pending": _pending,
    "rate_limit_hold": _hold,
    "budget_alarm": _hold,
    "budget_stop": _budget_stop,
    "worker_down": _worker,
    "worker_up": _worker,
}


def title(notices: Sequence[Notice]) -> str:
    if len(notices) == 1:
        return "superagent: " + HEADLINES.get(notices[0].kind, notices[0].kind)
    return f"superagent: {len(notices)} events"


def body(notices: Sequence[Notice]) -> str:
    return "\n\n".join(line(n) for n in notices)


def slack_escape(text: str) -> str:
    """Slack's three control characters (its docs: escape &, < and >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
