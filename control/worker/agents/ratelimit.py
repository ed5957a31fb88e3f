"""Recognise an agent's "you hit your usage limit" answer, and when the limit resets.

Claude Code has said it in several ways over its versions, sometimes with exit code 0
and `is_error: false`: "Claude AI usage limit reached|<epoch>", "Claude usage limit
reached. Your limit will reset at 3pm (America/Bogota)", "5-hour limit reached ∙ resets
3pm", "You've hit your session limit · resets Apr 23 at 4pm (Europe/Berlin)", "API Error:
Rate limit reached". The reset time, when one is given, becomes epoch seconds.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_PATTERNS = (
    re.compile(r"Claude AI usage limit reached", re.IGNORECASE),
    re.compile(r"\busage limit reached\b", re.IGNORECASE),
    re.compile(r"\blimit reached\s*[\u2219\u00b7\u2022|\u2013-]\s*resets\b", re.IGNORECASE),
    re.compile(r"You['\u2019]ve (?:hit|reached) your\b[^\n]{0,60}\blimit\b", re.IGNORECASE),
    re.compile(r"\bRate limit reached\b", re.IGNORECASE),
    re.compile(r"\brate_limit_error\b"),
    re.compile(r"\bYour limit will reset at\b", re.IGNORECASE),
)
# A notice as a whole first line: a few words, "limit reached", then the end or a separator.
_NOTICE_PREFIX = re.compile(r"^(?:API Error:\s*|Error:\s*)?(?:\d{3}\s+)?", re.IGNORECASE)
_NOTICES = (
    re.compile(
        r"(?:[\w-]+ ){0,3}limit reached\s*(?:$|[.|:,\u2219\u00b7\u2022\u2013-])", re.IGNORECASE
    ),
    re.compile(r"You['\u2019]ve (?:hit|reached) your\b[^\n]{0,60}\blimit\b", re.IGNORECASE),
    re.compile(r"\{.*\"rate_limit_error\""),
    re.compile(r"Your limit will reset at\b", re.IGNORECASE),
)
_EPOCH = re.compile(r"usage limit reached\|(\d{9,11})\b", re.IGNORECASE)
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
)}  # fmt: skip
_RESET = re.compile(
    r"\breset(?:s)?\s+(?:at\s+|on\s+)?"
    r"(?:(?P<mon>[A-Za-z]{3})[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)"
    r"(?:\s*\((?P<tz>[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*)\))?",
    re.IGNORECASE,
)
_RESET_IN = re.compile(
    r"\bresets?\s+in\s+(?:(?P<h>\d+)\s*h(?:ours?)?)?\s*(?:(?P<m>\d+)\s*m(?:in(?:utes?)?)?)?",
    re.IGNORECASE,
)


# Codex: "... or try again at Mar 17th, 2030 5:46 PM." (the worker's local time).
_TRY_AGAIN_AT = re.compile(
    r"\btry again at (?P<mon>[A-Za-z]{3})[a-z]*\.? (?P<day>\d{1,2})(?:st|nd|rd|th)?,? "
    r"(?P<year>\d{4}),? (?P<hour>\d{1,2}):(?P<minute>\d{2}) ?(?P<ampm>[AaPp]\.?[Mm]\.?)"
)


def looks_rate_limited(text: str) -> bool:
    """Whether `text` says a usage or rate limit stopped the agent."""
    return any(p.search(text) for p in _PATTERNS)


def starts_rate_limited(text: str, max_chars: int = 400) -> bool:
    """Whether a short final message is itself a limit notice (not a mention inside
    real work, such as a summary of code that handles rate limits)."""
    head = text.strip()
    if not head or len(head) > max_chars:
        return False
    first = _NOTICE_PREFIX.sub("", head.splitlines()[0].strip(), count=1)
    return any(p.match(first) for p in _NOTICES)


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def reset_epoch(text: str, now: float | None = None) -> float | None:
    """When the limit in `text` resets, in epoch seconds, or None if it does not say.

    A clock time without a date is the next such time after `now`, in the named zone
    (or this machine's when none is named).
    """
    now = time.time() if now is None else now
    if found := _EPOCH.search(text):
        return float(found.group(1))
    if found := _TRY_AGAIN_AT.search(text):
        return _dated_reset(found)
    if found := _RESET_IN.search(text):
        hours, minutes = found.group("h"), found.group("m")
        if hours or minutes:
            return now + 3600 * int(hours or 0) + 60 * int(minutes or 0)
    found = _RESET.search(text)
    return None if found is None else _clock_reset(found, now)


def _dated_reset(found: re.Match[str]) -> float | None:
    """Epoch seconds of a full local date and time ("Mar 17th, 2030 5:46 PM")."""
    hour, minute = int(found.group("hour")), int(found.group("minute"))
    month = _MONTHS.get(found.group("mon").lower())
    if month is None or not 1 <= hour <= 12 or minute > 59:
        return None
    hour = hour % 12 + (12 if found.group("ampm").lower().startswith("p") else 0)
    try:
        when = datetime(int(found.group("year")), month, int(found.group("day")), hour, minute)
    except ValueError:
        return None
    return when.timestamp()


def _clock_reset(found: re.Match[str], now: float) -> float | None:
    """Epoch seconds of a "resets [Mon DD at] H[:MM]am|pm [(Zone)]" match."""
    hour = int(found.group("hour"))
    minute = int(found.group("minute") or 0)
    if not 1 <= hour <= 12 or minute > 59:
        return None
    hour = hour % 12 + (12 if found.group("ampm").lower().startswith("p") else 0)
    zone = _zone(found.group("tz"))
    current = datetime.fromtimestamp(now, zone) if zone else datetime.fromtimestamp(now)
    candidate = current.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if found.group("mon"):
        month = _MONTHS.get(found.group("mon").lower()[:3])
        try:
            candidate = candidate.replace(month=month or 0, day=int(found.group("day")))
        except ValueError:
            return None
        if candidate.timestamp() < now - 86400:  # "Jan 2" said in late December
            candidate = candidate.replace(year=candidate.year + 1)
    elif candidate.timestamp() <= now:
        candidate += timedelta(days=1)
    return candidate.timestamp()
