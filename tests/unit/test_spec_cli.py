"""`control validate` end to end: exit codes, every problem on stdout, one-line usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from control.cli import app

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "specs"
FLEET = str(ROOT / "tests" / "fixtures" / "inventory" / "fleet")
WEBAPP = str(ROOT / "specs" / "examples" / "webapp.json")

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_valid_spec_exits_0() -> None:
    code, out, err = run("validate", WEBAPP, "--inventory", FLEET)
    assert code == 0, err
    assert "webapp.json: valid (8 phases; 0 errors, 0 warnings)" in out
    assert "not checked" not in out


def test_without_inventory_says_what_was_not_checked() -> None:
    code, out, _ = run("validate", WEBAPP)
    assert code == 0
    assert "capabilities and pins not checked: pass --inventory DIR" in out


def test_invalid_spec_exits_1_and_prints_every_error_with_its_path() -> None:
    code, out, _ = run("validate", str(FIXTURES / "invalid" / "cycle-three.json"))
    assert code == 1
    assert "error   $.phases[0].depends_on: dependency cycle: a -> c -> b -> a" in out
    assert "cycle-three.json: invalid (1 error, 0 warnings)" in out


def test_json_output() -> None:
    code, out, _ = run(
        "validate", str(FIXTURES / "invalid" / "capability-missing.json"), "-i", FLEET, "--json"
    )
    assert code == 1
    data = json.loads(out)
    assert data["valid"] is False and data["inventory_checked"] is True
    assert data["errors"][0]["path"] == "$.phases[1].requires[1]"
    assert data["errors"][0]["severity"] == "error"
    assert data["phases"] == 0


def test_warnings_pass_unless_strict() -> None:
    vague = str(FIXTURES / "valid" / "vague.json")
    code, out, _ = run("validate", vague)
    assert code == 0
    assert "warning $.phases[0].verify: no verify command" in out
    code, out, _ = run("validate", vague, "--strict")
    assert code == 1
    assert "invalid (0 errors, 2 warnings) (--strict: warnings fail)" in out
    code, out, _ = run("validate", vague, "--strict", "--json")
    assert code == 1 and json.loads(out)["valid"] is False and json.loads(out)["strict"]


def test_not_json_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text("version: 1\nname: yaml-is-not-json\n")
    code, out, err = run("validate", str(path))
    assert code == 2 and out == ""
    assert err == (
        f"error: {path}: the spec is not JSON: line 1 column 1: Expecting value; "
        "specs are JSON, and this looks like YAML\n"
    )


def test_not_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path))
    assert code == 2
    assert err.strip() == f"error: {tmp_path}: is a directory, not a spec file"
    code, _, err = run("validate", str(tmp_path / "absent.json"))
    assert code == 2 and "no such spec file" in err


def test_a_broken_inventory_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    alpha:\n")
    code, _, err = run("validate", WEBAPP, "--inventory", str(tmp_path))
    assert code == 2
    assert err.strip() == f"error: {tmp_path}: no group 'workers'; list the worker hosts under it"
