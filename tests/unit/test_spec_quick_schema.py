"""The quick schema check says "valid" only where jsonschema finds no error, and says it
for every valid example (else the speed it exists for is silently lost)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from control.spec.quick_schema import compile_schema
from control.spec.schema_errors import _inlined, _quick, _validator

REPO = Path(__file__).resolve().parents[2]
VALID = sorted(
    [
        *(REPO / "tests/fixtures/specs/valid").glob("*.json"),
        *(REPO / "specs/examples").glob("*.json"),
    ]
)
INVALID = sorted((REPO / "tests/fixtures/specs/invalid").glob("*.json"))


def schema_valid(document: Any) -> bool:
    return not any(True for _ in _validator().iter_errors(document))


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_every_valid_example_is_recognised_quickly(path: Path) -> None:
    document = json.loads(path.read_text())
    assert schema_valid(document)
    assert _quick()(document)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_no_invalid_fixture_is_passed_that_jsonschema_refuses(path: Path) -> None:
    document = json.loads(path.read_text())
    if _quick()(document):
        assert schema_valid(document), path.name


# Values that sit on the edges of the schema's keywords: types JSON equality blurs,
# empty and blank text, bounds, lists with repeats, unknown fields.
ODD = [None, True, False, 0, 1, 1.0, -1, 0.5, 20, 21, 10080, 10080.5, 1e309, float("nan"),
       "", " ", "\t", "-x", "a b", "Main", "ok", "x" * 70, [], [""], ["a", "a"], [1, 1.0],
       [True, 1], ["linux"], {}, {"unknown": 1}, {"file": ""}, {"file": "tasks/a.md"}]  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(document: Any, rng: random.Random) -> Any:
    mutated = copy.deepcopy(document)
    path = rng.choice(_paths(mutated)[1:])
    parent = mutated
    for step in path[:-1]:
        parent = parent[step]
    choice = rng.random()
    if choice < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif choice < 0.25 and isinstance(parent, dict):
        parent[rng.choice(["extra", "Phases", "verify_network", "depends"])] = rng.choice(ODD)
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(ODD))
    return mutated


def test_random_mutations_never_pass_what_jsonschema_refuses() -> None:
    rng = random.Random(20261130)
    seeds = [json.loads(p.read_text()) for p in VALID]
    refused = 0
    for _ in range(3000):
        document = _mutate(rng.choice(seeds), rng)
        if not schema_valid(document):
            refused += 1
            assert not _quick()(document), json.dumps(document, default=str)[:2000]
    assert refused > 1000  # the mutations do reach the schema's rules


def test_a_keyword_it_does_not_know_always_defers() -> None:
    check = compile_schema({"type": "string", "format": "email"})
    assert check("a@b.c") is False
    assert compile_schema({"items": [{"type": "string"}]})(["x"]) is False
    assert compile_schema({"type": "integer"})(1.0) is False  # jsonschema's integer; deferred
    assert compile_schema({"uniqueItems": True})([1, 2]) is False  # not text: deferred
    assert compile_schema({"minimum": 0})(float("nan")) is False
    assert _inlined()["properties"]["phases"]["items"]["type"] == "object"  # refs inlined
