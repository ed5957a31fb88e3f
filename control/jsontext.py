"""Bytes to JSON with one-line errors that say where: for specs, payloads and responses."""

from __future__ import annotations

import json
from typing import Any

from control.errors import UsageError


def parse_json(raw: bytes, label: str, what: str) -> Any:
    """The JSON value in `raw`; UsageError naming `label` (a file, or stdin) and the spot."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label}: the {what} is not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise UsageError(f"{label}: the {what} is empty; expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{label}: the {what} is not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
