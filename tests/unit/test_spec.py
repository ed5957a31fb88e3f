"""The spec format and its validator, against real fixture files.

Every invalid fixture names the one JSON path and the words of the message that
tells the user what to fix; every valid fixture and example loads with defaults applied.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import control
from control.errors import UsageError
from control.inventory import Worker, load_inventory
from control.names import branch_name_problem, host_name_problem
from control.spec import (
    DEFAULT_MAX_ATTEMPTS,
    InvalidSpecError,
    check_document,
    check_file,
    deliverable_problem,
    load_spec,
    schema,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "specs"
FLEET = ROOT / "tests" / "fixtures" / "inventory" / "fleet"
EXAMPLES = ROOT / "specs" / "examples"

# fixture name -> (JSON path of the error, words the message must hold)
INVALID: dict[str, tuple[str, str]] = {
    "not-an-object": ("$", "expected an object, got a list"),
    "missing-version": ("$.version", 'required field is missing: add "version": 1'),
    "wrong-version": ("$.version", "unsupported value 2"),
    "bad-name": ("$.name", "'-fixture' is not allowed: the project name"),
    "missing-repo": ("$.repo", "required field is missing: say where the code lives"),
    "repo-url-option": ("$.repo.url", "not starting with '-'"),
    "repo-url-bracket-option": ("$.repo.url", "brackets may hold only an IPv6 address"),
    "repo-url-ssh-user-option": ("$.repo.url", "the user '-oProxyCommand=x' is not a plain name"),
    "repo-url-ext-helper": ("$.repo.url", "remote helpers"),
    "repo-url-fd-helper": ("$.repo.url", "remote helpers"),
    "base-branch-invalid": ("$.repo.base_branch", "cannot contain '..'"),
    "branch-prefix-space": ("$.repo.branch_prefix", "cannot contain U+0020"),
    "unknown-top-field": ("$.phase", "unknown field 'phase'; did you mean 'phases'?"),
    "empty-phases": ("$.phases", "must not be empty"),
    "phase-not-object": ("$.phases[1]", "expected an object, got text"),
    "missing-task": ("$.phases[0].task", "required field is missing: give the agent"),
    "blank-task": ("$.phases[0].task", "the task is blank"),
    "empty-task": ("$.phases[0].task", "the task is empty"),
    "task-wrong-type": ("$.phases[0].task", "expected text or an object, got a list"),
    "task-file-field-typo": ("$.phases[0].task.path", "unknown field 'path'"),
    "task-file-missing": ("$.phases[0].task.file", "no such task file 'tasks/nowhere.md'"),
    "task-file-escapes": ("$.phases[0].task.file", "escapes the spec's directory"),
    "task-file-absolute": ("$.phases[0].task.file", "is absolute"),
    "task-file-empty": ("$.phases[0].task.file", "'tasks/empty.md' is empty"),
    "task-file-directory": ("$.phases[0].task.file", "'tasks' is a directory"),
    "missing-deliverables": ("$.phases[1].deliverables", "required field is missing: list the"),
    "empty-deliverables": ("$.phases[1].deliverables", "must not be empty: paths or globs"),
    "deliverable-absolute": ("$.phases[1].deliverables[1]", "'/etc/passwd' is absolute"),
    "deliverable-escapes": ("$.phases[1].deliverables[0]", "escapes the repository with '..'"),
    "deliverable-backslash": ("$.phases[1].deliverables[0]", "use '/' as the separator"),
    "deliverable-windows-drive": ("$.phases[1].deliverables[0]", "is absolute"),
    "deliverable-root": ("$.phases[1].deliverables[0]", "is the repository itself"),
    "deliverable-home": ("$.phases[1].deliverables[0]", "'~/.ssh/id_rsa' is absolute"),
    "duplicate-ids": ("$.phases[2].id", "duplicate id 'api' (first at $.phases[1])"),
    "bad-id": ("$.phases[1].id", "'Api_v2' is not allowed: a slug"),
    "unknown-dependency": ("$.phases[1].depends_on[0]", "unknown phase 'schemaa'; did you mean"),
    "dependency-listed-twice": ("$.phases[1].depends_on", "'schema' is listed twice"),
    "cycle-self": ("$.phases[0].depends_on", "dependency cycle: schema -> schema"),
    "cycle-two": ("$.phases[0].depends_on", "dependency cycle: schema -> api -> schema"),
    "cycle-three": ("$.phases[0].depends_on", "dependency cycle: a -> c -> b -> a"),
    "branch-leading-dash": ("$.phases[1].branch", "cannot start with '-'"),
    "branch-double-dot": ("$.phases[1].branch", "cannot contain '..'"),
    "branch-lock-suffix": ("$.phases[1].branch", "cannot end with '.lock'"),
    "branch-space": ("$.phases[1].branch", "cannot contain U+0020"),
    "branch-reflog-syntax": ("$.phases[1].branch", "cannot contain '@{'"),
    "branch-collision": ("$.phases[1].branch", "is also the branch of $.phases[0]"),
    "branch-is-base": ("$.phases[1].branch", "branch 'main' is the base branch"),
    "branch-directory-conflict": ("$.phases[1].branch", "cannot coexist with branch"),
    "estimate-zero": ("$.phases[1].estimate_minutes", "must be more than 0, got 0"),
    "max-attempts-text": ("$.phases[1].max_attempts", "expected a whole number, got text"),
    "timeout-too-long": ("$.phases[1].timeout_minutes", "must be at most 10080"),
    "budget-phase-over-run": ("$.phases[1].budget_usd", "$12 is more than the run's budget_usd"),
    "budget-zero": ("$.budget_usd", "must be more than 0, got 0"),
    "budget-text": ("$.phases[1].budget_usd", "expected a number, got text"),
    "permission-mode-unknown": ("$.phases[1].agent.permission_mode", "'yolo' is not one of"),
    "agent-unknown-field": ("$.phases[1].agent.max_turn", "did you mean 'max_turns'?"),
    "unknown-phase-field": ("$.phases[1].dependson", "did you mean 'depends_on'?"),
    "capability-bad-label": ("$.phases[1].requires[0]", "'GPU' is not allowed: a capability"),
    "capability-missing": (
        "$.phases[1].requires[1]",
        "no worker of the inventory has capability 'macos'",
    ),
    "capabilities-on-no-single-worker": (
        "$.phases[1].requires",
        "no single worker has all of gpu, windows-files",
    ),
    "pin-unknown-worker": (
        "$.phases[1].worker",
        "no worker 'servr' in the inventory; did you mean 'server'?",
    ),
    "pin-leading-dash": ("$.phases[1].worker", "not starting with '-'"),
    "pin-lacks-capability": ("$.phases[1].worker", "pinned to 'laptop', which lacks docker"),
    "verify-blank-command": ("$.phases[1].verify[1]", "must not be blank"),
    "title-too-long": ("$.phases[1].title", "too long: 201 characters, at most 200"),
    "repo-url-relative": ("$.repo.url", "'demo/origin.git' is a relative path"),
}


@pytest.fixture(scope="module")
def fleet() -> list[Worker]:
    return load_inventory(FLEET)


def test_every_invalid_fixture_has_an_expectation_and_there_are_enough() -> None:
    names = {p.stem for p in (FIXTURES / "invalid").glob("*.json")}
    assert names == set(INVALID)
    assert len(names) >= 30


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixture_reports_its_path_and_fix(name: str, fleet: list[Worker]) -> None:
    path, words = INVALID[name]
    report = check_file(FIXTURES / "invalid" / f"{name}.json", fleet)
    assert not report.ok() and report.spec is None
    found = [(i.path, i.message) for i in report.errors]
    assert any(p == path and words in m for p, m in found), found
    with pytest.raises(InvalidSpecError, match="invalid spec"):
        load_spec(FIXTURES / "invalid" / f"{name}.json", fleet)


@pytest.mark.parametrize("name", ["full", "minimal", "vague"])
def test_valid_fixture_loads(name: str, fleet: list[Worker]) -> None:
    report = check_file(FIXTURES / "valid" / f"{name}.json", fleet)
    assert report.errors == [], report.errors
    assert report.spec is not None and report.inventory_checked


@pytest.mark.parametrize("example", ["webapp.json", "tiny.json", "boltons.json"])
def test_examples_validate_against_the_example_fleet(example: str) -> None:
    workers = load_inventory(ROOT / "inventory" / "example")
    report = check_file(EXAMPLES / example, workers)
    assert report.issues == []


def test_web_app_example_has_a_diamond_and_a_one_kind_of_machine_phase() -> None:
    spec = load_spec(EXAMPLES / "webapp.json")
    assert 6 <= len(spec.phases) <= 10
    frontend = spec.phase("frontend")
    assert set(frontend.depends_on) == {"api-auth", "api-tasks"}
    assert spec.phase("api-auth").depends_on == spec.phase("api-tasks").depends_on == ("schema",)
    workers = load_inventory(ROOT / "inventory" / "example")
    only_one = [
        p.id
        for p in spec.phases
        if p.requires and sum(w.capabilities.issuperset(p.requires) for w in workers) == 1
    ]
    assert "windows-paths" in only_one
    assert frontend.task.startswith("Build the React") and frontend.task_file == "tasks/frontend.md"


def test_defaults_apply_and_phase_values_override(fleet: list[Worker]) -> None:
    spec = load_spec(FIXTURES / "valid" / "full.json", fleet)
    build, docs = spec.phases
    assert spec.repo.base_branch == "develop" and spec.repo.branch_prefix == "agents/run-1"
    assert build.branch == "agents/run-1/build-system"
    assert docs.branch == "agents/run-1/docs"
    assert build.verify == ("make test",)  # from defaults
    assert docs.verify == ("test -s docs/build.md", "grep -q '^## ' docs/build.md")
    assert (build.estimate_minutes, docs.estimate_minutes) == (45.5, 20.0)
    assert (build.max_attempts, docs.max_attempts) == (1, 3)
    assert (build.silence_minutes, docs.timeout_minutes) == (20.0, 60.0)
    assert (build.verify_network, docs.verify_network) == (False, True)
    assert build.agent.model == "opus" and build.agent.max_turns == 120
    assert build.agent.permission_mode == "acceptEdits"  # merged key by key
    assert docs.agent.backend == "command" and docs.agent.command == ("my-agent", "--headless")
    assert docs.agent.max_budget_usd == 3.5
    assert build.task.startswith("Write a Makefile") and build.worker == "server"
    assert json.loads(json.dumps(spec.to_dict()))["phases"][0]["id"] == "build"


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = load_spec(FIXTURES / "valid" / "minimal.json")
    (phase,) = spec.phases
    assert spec.repo.base_branch == "main"
    assert phase.branch == "superagent/readme"
    assert phase.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert phase.agent.backend == "claude-code" and phase.requires == ()
    assert phase.verify_network is True
    with pytest.raises(UsageError, match="no phase 'nope'"):
        spec.phase("nope")


def test_vague_phase_gets_warnings_not_errors() -> None:
    report = check_file(FIXTURES / "valid" / "vague.json")
    assert report.ok() and not report.ok(strict=True)
    assert {(w.path, w.message.split(";")[0]) for w in report.warnings} == {
        ("$.phases[0].task", "the task has only 2 words"),
        ("$.phases[0].verify", "no verify command: only the deliverables' existence is checked"),
    }


def test_defaults_verify_silences_the_no_verify_warning() -> None:
    doc = json.loads((FIXTURES / "valid" / "vague.json").read_text())
    doc["defaults"] = {"verify": ["make test"]}
    doc["phases"][0]["task"] = "Write every module of the stuff package with tests."
    assert check_document(doc, FIXTURES / "valid").issues == []


def test_budgets_apply_with_the_agent_cap_as_the_last_default() -> None:
    doc = json.loads((FIXTURES / "invalid" / "budget-phase-over-run.json").read_text())
    doc["phases"][1]["budget_usd"] = 3
    doc["burn_rate_usd_per_hour"] = 4
    spec = load_spec_document(doc)
    assert (spec.budget_usd, spec.burn_rate_usd_per_hour) == (10, 4)
    assert [p.budget_usd for p in spec.phases] == [2, 3]
    del doc["defaults"]["budget_usd"]
    doc["phases"][0]["agent"] = {"max_budget_usd": 1.5}
    assert [p.budget_usd for p in load_spec_document(doc).phases] == [1.5, 3]


def test_a_phase_without_a_cap_under_a_run_budget_is_warned_it_runs_alone() -> None:
    doc = json.loads((FIXTURES / "invalid" / "budget-phase-over-run.json").read_text())
    del doc["defaults"]["budget_usd"], doc["phases"][1]["budget_usd"]
    report = check_document(doc, FIXTURES / "invalid")
    assert report.ok() and [(w.path, w.message.split(":")[0]) for w in report.warnings] == [
        ("$.phases[0]", "no budget_usd (nor agent max_budget_usd) under the run's budget_usd"),
        ("$.phases[1]", "no budget_usd (nor agent max_budget_usd) under the run's budget_usd"),
    ]


def load_spec_document(doc: dict[str, Any]) -> Any:
    report = check_document(doc, FIXTURES / "invalid")
    assert report.ok(), report.issues
    return report.spec


def test_all_errors_at_once_in_document_order(fleet: list[Worker]) -> None:
    doc = json.loads((FIXTURES / "invalid" / "cycle-three.json").read_text())
    doc["version"] = 7
    doc["phases"][3]["deliverables"] = ["../x"]
    doc["phases"][1]["depends_on"].append("zz")
    paths = [i.path for i in check_document(doc, FIXTURES / "invalid", fleet).errors]
    assert paths == [
        "$.version",
        "$.phases[0].depends_on",
        "$.phases[1].depends_on[1]",
        "$.phases[3].deliverables[0]",
    ]


def test_a_task_file_needs_a_spec_file() -> None:
    doc = json.loads((FIXTURES / "valid" / "full.json").read_text())
    report = check_document(doc, None)
    assert [(i.path, i.message) for i in report.errors] == [
        ("$.phases[0].task.file", "a task file needs the spec to be a file (it is read beside it)")
    ]


def test_task_file_that_is_not_utf8(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "valid" / "minimal.json").read_text())
    doc["phases"][0]["task"] = {"file": "task.md"}
    (tmp_path / "task.md").write_bytes(b"\xff\xfe not text")
    (error,) = check_document(doc, tmp_path).errors
    assert error.message == "the task file 'task.md' is not UTF-8 text"


def test_every_cycle_is_reported_once() -> None:
    doc = json.loads((FIXTURES / "valid" / "minimal.json").read_text())
    template = doc["phases"][0]
    edges = {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["e"], "e": ["c"], "f": ["a", "c"]}
    doc["phases"] = [
        {**template, "id": k, "depends_on": v, "deliverables": [f"{k}.txt"]}
        for k, v in edges.items()
    ]
    messages = [i.message for i in check_document(doc, FIXTURES).errors]
    assert [m.split(" (")[0] for m in messages] == [
        "dependency cycle: a -> b -> a",
        "dependency cycle: c -> d -> e -> c",
    ]


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("broken-json", "not JSON: line 3 column 1"),
        ("empty", "the spec is empty"),
        ("latin1", "the spec is not UTF-8 (byte 21)"),
        ("directory", "is a directory, not a spec file"),
        ("absent", "no such spec file"),
        ("nested-1000", "the spec is nested too deeply to read"),
        ("nested-40", "nested more than 32 levels deep; a valid spec is at most 6"),
        ("two-phases-keys", "names the key 'phases' twice in one object (keys: version,"),
        ("yaml-as-json", "not JSON: line 1 column 1: Expecting value; specs are JSON, and this"),
    ],
)
def test_a_spec_that_is_not_a_json_file_is_a_usage_error(
    tmp_path: Path, source: str, words: str
) -> None:
    path = tmp_path / f"{source}.json"
    if source == "broken-json":
        path.write_text('{"version": 1,\n "name": "x"\n')
    elif source == "empty":
        path.write_text("  \n")
    elif source == "latin1":
        path.write_bytes(b'{"version": 1, "x": "\xe9"}')
    elif source == "directory":
        path.mkdir()
    elif source.startswith("nested-"):
        depth = int(source.split("-")[1])
        path.write_text('{"version": 1, "phases": ' + "[" * depth + "]" * depth + "}")
    elif source == "two-phases-keys":
        path.write_text('{"version": 1, "phases": [], "name": "x", "phases": [{"id": "a"}]}')
    elif source == "yaml-as-json":
        path.write_text("version: 1\nname: shop\nphases:\n  - id: api\n")
    with pytest.raises(UsageError, match=re.escape(words)):
        check_file(path)


def test_the_depth_limit_is_exact_and_the_first_repeated_key_is_named(tmp_path: Path) -> None:
    """The depth walk and the duplicate-key check are the fast ones: same answers at the edges."""
    path = tmp_path / "spec.json"
    for depth, refused in ((31, False), (32, True)):  # the document itself is one level more
        path.write_text('{"version": 1, "phases": ' + "[" * depth + "]" * depth + "}")
        if refused:
            with pytest.raises(UsageError, match="nested more than 32 levels deep"):
                check_file(path)
        else:
            assert check_file(path).errors  # read, then refused by the schema
    path.write_text('{"a": 1, "b": 2, "b": 3, "a": 4}')
    with pytest.raises(
        UsageError, match=re.escape("names the key 'b' twice in one object (keys: a, b)")
    ):
        check_file(path)


def test_a_yaml_spec_is_told_that_specs_are_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\nname: shop\n")
    with pytest.raises(UsageError, match="specs are JSON, not YAML"):
        check_file(path)


def test_the_schema_is_valid_2020_12_and_ships_in_the_package() -> None:
    Draft202012Validator.check_schema(schema())
    canonical = ROOT / "specs" / "schema" / "spec.schema.json"
    packaged = Path(control.__file__).parent / "schema" / "spec.schema.json"
    assert json.loads(canonical.read_text()) == schema()
    assert packaged.is_symlink() and not Path(packaged.readlink()).is_absolute()
    assert packaged.resolve() == canonical.resolve()


def test_every_schema_field_is_documented() -> None:
    """docs/specs.md names every field the schema accepts."""
    docs = (ROOT / "docs" / "specs.md").read_text()
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema())
    missing = sorted(n for n in names if f"`{n}`" not in docs)
    assert missing == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("superagent/api", None),
        ("feature/x-1.2", None),
        ("", "empty"),
        ("-x", "start with '-'"),
        ("HEAD", "reserved"),
        ("@", "reserved"),
        ("a..b", "'..'"),
        ("a@{b", "'@{'"),
        ("a b", "U+0020"),
        ("a\tb", "U+0009"),
        ("a~1", "'~'"),
        ("a^", "'^'"),
        ("a:b", "':'"),
        ("a?", "'?'"),
        ("a*", "'*'"),
        ("a[1", "'['"),
        ("a\\b", "'\\\\'"),
        ("/a", "start or end with '/'"),
        ("a/", "start or end with '/'"),
        ("a//b", "'//'"),
        ("a.", "end with '.'"),
        ("a/.b", "start with '.'"),
        ("a.lock/b", "end with '.lock'"),
    ],
)
def test_branch_names_follow_check_ref_format(name: str, problem: str | None) -> None:
    found = branch_name_problem(name)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("server", True),
        ("wsl-2.lan", True),
        ("_x", True),
        ("-x", False),
        ("", False),
        ("a b", False),
    ],
)
def test_host_names(name: str, ok: bool) -> None:
    assert (host_name_problem(name) is None) == ok


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("src/**/*.py", True),
        ("a/../b", True),
        ("./README.md", True),
        ("a/../..", False),
        ("..", False),
        (".", False),
        ("/x", False),
        ("D:x", False),
        ("a\\b", False),
    ],
)
def test_deliverable_paths_stay_in_the_repository(path: str, ok: bool) -> None:
    assert (deliverable_problem(path) is None) == ok
