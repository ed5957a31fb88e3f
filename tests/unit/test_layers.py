"""The layering written as import contracts (pyproject.toml, [tool.importlinter]): the CLI on
top, then the orchestrator side and the worker side, then the shared core; nothing imports
upward, and the two sides do not import each other. Every module under control/ has a layer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _layered() -> list[str]:
    """Every module named in the layers contract, in order."""
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    assert isinstance(layers, list)
    return [name.strip() for layer in layers for name in layer.replace("|", ":").split(":")]


def _top_modules(package: Path) -> set[str]:
    """control's modules and subpackages (a subpackage is one module for the layering)."""
    found = {f"control.{f.stem}" for f in package.glob("*.py") if f.stem != "__init__"}
    found |= {f"control.{d.name}" for d in package.iterdir() if (d / "__init__.py").is_file()}
    return found


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_import_contracts_hold() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in done.stdout


def test_every_module_is_in_exactly_one_layer() -> None:
    named = _layered()
    duplicates = sorted({n for n in named if named.count(n) > 1})
    assert duplicates == [], f"in more than one layer: {duplicates}"
    actual = _top_modules(REPO / "control")
    assert sorted(actual - set(named)) == [], "modules in no layer (add them to pyproject.toml)"
    assert sorted(set(named) - actual) == [], "layers name modules that do not exist"


@pytest.mark.parametrize(
    ("module", "imported", "broken"),
    [
        # The shared core reaching up into the CLI.
        ("errors.py", "cli_io", "The CLI on top, then the orchestrator and the worker"),
        # The worker reaching across into the orchestrator side.
        ("worker/wake.py", "orchestrator", "The worker does not import the orchestrator side"),
        ("merge.py", "worker", "The orchestrator side does not import the worker"),
        # The worker's executor reaching up into the daemon that hosts it.
        ("worker/phase.py", "worker.daemon", "The worker's executor does not import its host"),
    ],
)
def test_an_import_against_the_layering_breaks_a_contract(
    tmp_path: Path, module: str, imported: str, broken: str
) -> None:
    shutil.copytree(REPO / "control", tmp_path / "control",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    with (tmp_path / "control" / module).open("a") as source:
        source.write(f"\nimport control.{imported}  # noqa: E402\n")
    done = _lint(tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "0 broken" not in done.stdout
    broken_section = done.stdout.split("Broken contracts", 1)[-1]
    assert broken in broken_section, done.stdout[-3000:]


# -- module size ------------------------------------------------------------------------------

MAX_LINES = 500
# Over the limit when it was written down (issue 17), each being split by concern by the
# engineer named; a file leaves this list in the change that brings it under the limit.
OVER_LIMIT: set[str] = set()


def _over_limit(root: Path) -> dict[str, int]:
    """Every .py file under `root`/control and `root`/bench longer than MAX_LINES, with its
    line count (the rest of the Python outside tests/ is a probe and example fixtures)."""
    found = {}
    for path in sorted(p for top in ("control", "bench") for p in (root / top).rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found[str(path.relative_to(root))] = lines
    return found


def test_no_module_is_over_500_lines() -> None:
    over = _over_limit(REPO)
    new = {name: lines for name, lines in over.items() if name not in OVER_LIMIT}
    assert new == {}, f"over {MAX_LINES} lines: split them by concern: {new}"


def test_the_modules_allowed_over_the_limit_still_are() -> None:
    under = sorted(OVER_LIMIT - set(_over_limit(REPO)))
    assert under == [], f"now at most {MAX_LINES} lines: take them off OVER_LIMIT: {under}"


def test_the_size_check_catches_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "control" / "sub").mkdir(parents=True)
    (tmp_path / "control" / "sub" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "control" / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench_long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert _over_limit(tmp_path) == {
        "bench/bench_long.py": MAX_LINES + 1,
        "control/sub/long.py": MAX_LINES + 1,
    }
