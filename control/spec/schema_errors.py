"""The JSON Schema of a spec, and its errors put in words a user can act on.

Every message names the JSON path and what to write there; issues sort in document
order (`$.phases[2]` before `$.phases[10]`, fields in the schema's order).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from control.spec.model import Issue
from control.spec.quick_schema import Check, compile_schema

REQUIRED_HINTS = {
    "version": 'add "version": 1',
    "name": 'name the project, e.g. "name": "shop"',
    "repo": 'say where the code lives: "repo": {"url": "git@host:team/project.git"}',
    "url": "give the clone URL every worker uses",
    "phases": "list the phases, at least one",
    "id": "give the phase a slug id such as 'api'",
    "title": "give the phase a one-line title",
    "task": 'give the agent its instruction: text, or {"file": "tasks/<id>.md"} beside the spec',
    "deliverables": "list the paths or globs the phase must leave in the repository",
    "file": "name the file that holds the task, relative to the spec",
}
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "text",
    bool: "true/false",
    int: "a number",
    float: "a number",
    type(None): "null",
}
_SCHEMA_TYPES = {
    "object": "an object",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.([A-Za-z_][A-Za-z0-9_]*)|\['((?:[^'\\]|\\.)*)'\]")


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of a spec, as shipped inside the package."""
    text = resources.files("control").joinpath("schema/spec.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_inlined())


@functools.cache
def _quick() -> Check:
    return compile_schema(_inlined())


@functools.cache
def _inlined() -> dict[str, Any]:
    """The schema with every `$ref` replaced by its target. References resolved once, up
    front: resolving `$ref` per phase was a third of the time of validating a thousand
    phases. The schema has no recursion."""
    defs = schema()["$defs"]

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref", "")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = inline(defs[ref.removeprefix("#/$defs/")])
            return {**target, **{k: inline(v) for k, v in node.items() if k != "$ref"}}
        return {k: inline(v) for k, v in node.items()}

    inlined: dict[str, Any] = inline(schema())
    return inlined


def schema_issues(document: Any) -> Iterator[Issue]:
    """Every schema error of `document`, in words, each with its JSON path.

    A valid document (the common case, and a big one is where it costs) is recognised
    by the quick check; jsonschema walks only the others, and words their errors."""
    if _quick()(document):
        return
    for error in _validator().iter_errors(document):
        yield from _translate(error)


def _translate(error: ValidationError) -> Iterator[Issue]:  # noqa: PLR0911, PLR0912
    path = error.json_path
    value: Any = error.instance
    expected: Any = error.validator_value
    keyword = error.validator
    subschema = error.schema if isinstance(error.schema, dict) else {}
    hint = subschema.get("description", "")
    if keyword == "required":
        for name in expected:
            if isinstance(value, dict) and name not in value:
                what = REQUIRED_HINTS.get(name, "")
                yield Issue(_child(path, name), f"required field is missing: {what}".rstrip(": "))
        return
    if keyword == "additionalProperties":
        known = sorted(subschema.get("properties", {}))
        for name in value:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
            yield Issue(_child(path, name), f"unknown field {name!r}; {fix}")
        return
    if keyword == "anyOf":  # the task: text or {"file": ...}
        if isinstance(value, dict):
            for sub in error.context or []:
                if sub.schema_path and sub.schema_path[0] == 1:
                    yield from _translate(sub)
            return
        if isinstance(value, str):
            yield Issue(path, "the task is empty: " + REQUIRED_HINTS["task"])
            return
        yield Issue(path, f"expected text or an object, got {_json_type(value)}: {hint}")
        return
    if keyword == "type":
        wanted = expected
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        expected = " or ".join(_SCHEMA_TYPES.get(n, n) for n in names)
        yield Issue(path, f"expected {expected}, got {_json_type(value)}")
        return
    if keyword in ("minLength", "minItems") and not value:
        yield Issue(path, f"must not be empty: {hint}".rstrip(": "))
        return
    if keyword == "pattern" and isinstance(value, str) and not value.strip():
        yield Issue(path, "must not be blank")
        return
    if keyword == "pattern":
        yield Issue(path, f"{value!r} is not allowed: {hint}".rstrip(": "))
        return
    if keyword == "maxLength":
        limit = expected
        yield Issue(path, f"too long: {len(value)} characters, at most {limit}")
        return
    if keyword == "enum":
        choices = ", ".join(str(c) for c in expected)
        yield Issue(path, f"{value!r} is not one of: {choices}")
        return
    if keyword == "const":
        yield Issue(path, f"unsupported value {value!r}: {hint}")
        return
    if keyword == "uniqueItems":
        twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
        yield Issue(path, f"{twice!r} is listed twice")
        return
    bounds = {
        "exclusiveMinimum": "more than",
        "minimum": "at least",
        "maximum": "at most",
        "exclusiveMaximum": "less than",
    }
    if keyword in bounds:
        yield Issue(path, f"must be {bounds[keyword]} {expected}, got {value!r}")
        return
    yield Issue(path, error.message)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def path_key(path: str) -> tuple[tuple[int, int, str], ...]:
    """Sort paths in document order: `$.phases[2]` before `$.phases[10]`."""
    return tuple(
        (0, int(index), "")
        if index
        else (1, _field_order().get(name or quoted, 1000), name or quoted)
        for index, name, quoted in _PATH_TOKEN.findall(path)
    )


@functools.cache
def _field_order() -> dict[str, int]:
    """Fields sort in the order the schema (and a spec) lists them, not alphabetically."""
    order: dict[str, int] = {}
    sections = [schema(), *(schema()["$defs"][d] for d in ("repo", "task_file", "phase"))]
    for section in sections:
        for name in section.get("properties", {}):
            order.setdefault(name, len(order))
    return order
