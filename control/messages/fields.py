"""How a payload is checked field by field, and the version both sides must share."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

from control.errors import UsageError

PAYLOAD_VERSION = 1


def to_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_b64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"{what} is not base64: {exc}") from exc


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def is_number(value: Any) -> bool:
    """A cost a worker may report: a finite number, not negative (that would refund)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value) and value >= 0
    )  # fmt: skip


def number(value: Any) -> float:
    return float(value) if is_number(value) else 0.0


def fields_of(payload: Any, kind: str, known: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The fields of a typed payload of `kind` (`what` it is, for people), unknown ones
    dropped (a newer sender's); UsageError when it is another kind or another version."""
    article = "an" if what[0] in "aeiou" else "a"
    if not isinstance(payload, dict) or payload.get("type") != kind:
        raise UsageError(f"payload is not {article} {what} (expected an object with type {kind!r})")
    if payload.get("version") != PAYLOAD_VERSION:
        raise UsageError(
            f"{what} version {payload.get('version')!r} is not {PAYLOAD_VERSION}; "
            "upgrade the worker and the orchestrator together"
        )
    return {k: v for k, v in payload.items() if k in known}


def require_text(data: Mapping[str, Any], name: str, what: str) -> None:
    if not isinstance(data.get(name), str) or not data[name]:
        raise UsageError(f"{what} field {name!r} must be non-empty text")


def text_tuple(data: dict[str, Any], name: str, what: str) -> None:
    """`data[name]`, a list of text (empty when absent), made a tuple in place."""
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{what} field {name!r} must be a list of text")
    data[name] = tuple(value)
