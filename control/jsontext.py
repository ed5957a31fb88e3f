"""JSON in and out: bytes to JSON with one-line errors that say where (specs, payloads,
responses), and the one canonical text that is hashed and stored."""

from __future__ import annotations

import json

from control.errors import UsageError

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Any


def parse_json(raw: bytes, label: str, what: str, *, unique_keys: bool = False) -> Any:
    """The JSON value in `raw`; UsageError naming `label` (a file, or stdin) and the spot.

    `unique_keys` refuses an object that names a key twice (JSON keeps the last one
    silently, dropping the other: two "phases" lists would lose one).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label}: the {what} is not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise UsageError(f"{label}: the {what} is empty; expected JSON")
    hook = _unique if unique_keys else None
    try:
        return json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{label}: the {what} is not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError:
        raise UsageError(f"{label}: the {what} is nested too deeply to read") from None
    except _DuplicateKey as exc:
        raise UsageError(f"{label}: the {what} {exc}") from None


class _DuplicateKey(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object, unless a key repeats. Built by `dict` in C and checked by size: a
    10,000-phase spec has tens of thousands of objects, and a Python loop over every
    pair cost a tenth of a second of each `control plan`."""
    seen = dict(pairs)
    if len(seen) < len(pairs):
        keys = ", ".join(seen)
        raise _DuplicateKey(
            f"names the key {_first_repeated(pairs)!r} twice in one object (keys: {keys}); "
            "JSON would keep only the last: merge them into one"
        )
    return seen


def _first_repeated(pairs: list[tuple[str, Any]]) -> str:
    """The first key that occurs a second time, read in order."""
    keys: set[str] = set()
    for key, _ in pairs:
        if key in keys:
            return key
        keys.add(key)
    raise AssertionError("no key repeats")


def canonical_json(value: Any) -> str:
    """The one serialisation used for hashing and storage: keys sorted, no spaces."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"not representable as JSON: {exc}") from exc
