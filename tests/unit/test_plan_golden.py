"""`control plan` says what it said before, for the example specs and the benchmark's shapes.

Making the planner faster must not change what it predicts. The expected plans are
stored (tests/fixtures/plans/golden.json) as each plan's makespan and a digest of its
whole JSON document: schedule, bound, sweep. A change to the scheduling policy changes
them on purpose; then regenerate with SUPERAGENT_UPDATE_GOLDEN=1 and say so in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from control.inventory import Worker, load_inventory
from control.plan import plan
from control.spec import Spec, check_document, load_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "specs" / "examples"
GOLDEN = ROOT / "tests" / "fixtures" / "plans" / "golden.json"
BENCH = ROOT / "bench"
BIG_FLEET = [
    Worker("server", frozenset({"linux", "docker"}), 2),
    Worker("laptop", frozenset({"linux"}), 1),
]


def _big_specs(n: int) -> dict[str, dict[str, object]]:
    sys.path.insert(0, str(BENCH))
    try:
        from bench_schedule import wide_and_deep_specs  # noqa: PLC0415
    finally:
        sys.path.remove(str(BENCH))
    specs: dict[str, dict[str, object]] = wide_and_deep_specs(n)
    return specs


def _cases() -> dict[str, tuple[Spec, list[Worker] | None, int]]:
    inventory = load_inventory(ROOT / "inventory" / "example")
    cases: dict[str, tuple[Spec, list[Worker] | None, int]] = {}
    for name in ("tiny", "webapp", "boltons"):
        spec = load_spec(EXAMPLES / f"{name}.json")
        for count in (1, 3):
            cases[f"{name} on {count} interchangeable"] = (spec, None, count)
        cases[f"{name} on the example inventory"] = (spec, inventory, 1)
    for shape, document in _big_specs(800).items():
        big = check_document(document, workers=BIG_FLEET).spec
        assert big is not None
        cases[f"800 phases {shape}"] = (big, BIG_FLEET, 1)
    return cases


def _figures(spec: Spec, workers: list[Worker] | None, count: int) -> dict[str, object]:
    document = plan(spec, workers, count).to_dict()
    text = json.dumps(document, sort_keys=True)
    return {
        "makespan_minutes": document["makespan_minutes"],
        "by_workers": [point["makespan_minutes"] for point in document["by_workers"]],
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def test_plans_are_what_they_were() -> None:
    found = {name: _figures(*case) for name, case in _cases().items()}
    if os.environ.get("SUPERAGENT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        pytest.skip("golden plans rewritten")
    expected = json.loads(GOLDEN.read_text())
    assert sorted(found) == sorted(expected)
    for name, figures in found.items():
        assert figures == expected[name], name
