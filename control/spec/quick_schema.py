"""A quick "valid" for a document the spec's JSON Schema accepts, or "ask jsonschema".

jsonschema walks a spec of 10,000 phases in about a second, most of it its own
bookkeeping; the schema compiled to plain closures walks it in a tenth of that. The
quick check only ever says "valid": on anything else the caller runs jsonschema, whose
errors are the ones put in words. So it must never pass what jsonschema refuses, and it
is conservative: a keyword it does not know, a float where an integer is wanted, or
items it cannot compare send the document to jsonschema.

Why not fastjsonschema (the library for this): it validates the same 10,000 phases in
0.075 s against 0.15 s here, but compiling the schema costs it 0.29 s in every process,
and every `control validate`, `plan` and `dispatch` is a new process with a small spec;
these closures compile in milliseconds. `tests/unit/test_spec_quick_schema.py` holds them
to jsonschema's verdict on every fixture, example and thousands of mutations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

# Keywords that say nothing about validity.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples",
     "deprecated", "readOnly", "writeOnly"}
)  # fmt: skip


def compile_schema(node: Any) -> Check:
    """`node` (with every `$ref` already inlined) as one check; a check that always
    defers when the schema holds something this module does not know."""
    if node is True or node == {}:
        return _always
    if not isinstance(node, Mapping):
        return _never
    checks: list[Check] = []
    for key, value in node.items():
        if key in _ANNOTATIONS:
            continue
        builder = _KEYWORDS.get(key)
        if builder is None:
            return _never
        checks.append(builder(value, node))
    if len(checks) == 1:
        return checks[0]
    return lambda instance: all(check(instance) for check in checks)


def _always(instance: Any) -> bool:
    return True


def _never(instance: Any) -> bool:
    return False


def _is_number(instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, int):
        return True
    return isinstance(instance, float) and math.isfinite(instance)


_TYPES: dict[str, Check] = {
    "object": lambda i: isinstance(i, dict),
    "array": lambda i: isinstance(i, list),
    "string": lambda i: isinstance(i, str),
    "boolean": lambda i: isinstance(i, bool),
    "null": lambda i: i is None,
    # A float with an integral value is an integer to jsonschema; here it defers.
    "integer": lambda i: isinstance(i, int) and not isinstance(i, bool),
    "number": _is_number,
}


def _type(value: Any, node: Mapping[str, Any]) -> Check:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or any(n not in _TYPES for n in names):
        return _never
    checks = [_TYPES[n] for n in names]
    if len(checks) == 1:
        return checks[0]
    return lambda i: any(check(i) for check in checks)


def _properties(value: Any, node: Mapping[str, Any]) -> Check:
    if not isinstance(value, Mapping):
        return _never
    checks = [(name, compile_schema(sub)) for name, sub in value.items()]

    def check(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return True
        return all(sub(instance[name]) for name, sub in checks if name in instance)

    return check


def _additional(value: Any, node: Mapping[str, Any]) -> Check:
    if "patternProperties" in node:
        return _never
    known = frozenset(node.get("properties", {}))
    sub = compile_schema(value) if value is not False else None

    def check(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return True
        extra = [k for k in instance if k not in known]
        if sub is None:
            return not extra
        return all(sub(instance[k]) for k in extra)

    return check


def _required(value: Any, node: Mapping[str, Any]) -> Check:
    names = tuple(value)
    return lambda i: not isinstance(i, dict) or all(n in i for n in names)


def _items(value: Any, node: Mapping[str, Any]) -> Check:
    if isinstance(value, list):
        return _never  # the tuple form (prefixItems' older spelling)
    sub = compile_schema(value)
    return lambda i: not isinstance(i, list) or all(sub(item) for item in i)


def _min_items(value: Any, node: Mapping[str, Any]) -> Check:
    return lambda i: not isinstance(i, list) or len(i) >= value


def _max_items(value: Any, node: Mapping[str, Any]) -> Check:
    return lambda i: not isinstance(i, list) or len(i) <= value


def _unique(value: Any, node: Mapping[str, Any]) -> Check:
    if value is not True:
        return _always

    def check(instance: Any) -> bool:
        if not isinstance(instance, list):
            return True
        # Text only: JSON equality of other values (1 and 1.0, true and 1) is jsonschema's.
        return all(isinstance(i, str) for i in instance) and len(set(instance)) == len(instance)

    return check


def _min_length(value: Any, node: Mapping[str, Any]) -> Check:
    return lambda i: not isinstance(i, str) or len(i) >= value


def _max_length(value: Any, node: Mapping[str, Any]) -> Check:
    return lambda i: not isinstance(i, str) or len(i) <= value


def _pattern(value: Any, node: Mapping[str, Any]) -> Check:
    compiled = re.compile(value)  # jsonschema's own: re.search
    return lambda i: not isinstance(i, str) or compiled.search(i) is not None


def _enum(value: Any, node: Mapping[str, Any]) -> Check:
    options = list(value)
    # The same type as well as equal: jsonschema tells true from 1, this does not try.
    return lambda i: any(type(o) is type(i) and o == i for o in options)


def _const(value: Any, node: Mapping[str, Any]) -> Check:
    return _enum([value], node)


def _bound(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Mapping[str, Any]], Check]:
    def build(value: Any, node: Mapping[str, Any]) -> Check:
        def check(instance: Any) -> bool:
            if isinstance(instance, bool) or not isinstance(instance, int | float):
                return True  # not a number: the bound says nothing
            return _is_number(instance) and compare(instance, value)  # NaN, inf: defer

        return check

    return build


def _any_of(value: Any, node: Mapping[str, Any]) -> Check:
    checks = [compile_schema(sub) for sub in value]
    return lambda i: any(check(i) for check in checks)


_KEYWORDS: dict[str, Callable[[Any, Mapping[str, Any]], Check]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "minItems": _min_items,
    "maxItems": _max_items,
    "uniqueItems": _unique,
    "minLength": _min_length,
    "maxLength": _max_length,
    "pattern": _pattern,
    "enum": _enum,
    "const": _const,
    "minimum": _bound(lambda i, v: i >= v),
    "maximum": _bound(lambda i, v: i <= v),
    "exclusiveMinimum": _bound(lambda i, v: i > v),
    "exclusiveMaximum": _bound(lambda i, v: i < v),
    "anyOf": _any_of,
}
