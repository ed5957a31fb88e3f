"""The final check's commands: each distinct command once, each test file named by
several phases once, and a failure still named per phase (control/checkset.py)."""

from __future__ import annotations

import pytest

from control.checkset import distinct_checks, failed_phases, is_test_path, split_runner
from control.errors import UsageError
from control.messages import CheckResult, IntegrationCheck, IntegrationPhase, IntegrationTask

PYTEST = "python -m pytest -q"


def test_identical_commands_run_once_whatever_their_spacing_and_quoting() -> None:
    checks = distinct_checks(
        [("a", "make test"), ("b", "make  test "), ("c", "'make' test"), ("c", "make lint")]
    )
    assert checks == (
        IntegrationCheck("make test", ("a", "b", "c")),
        IntegrationCheck("make lint", ("c",)),
    )


def test_one_runner_on_overlapping_test_files_runs_each_file_once() -> None:
    checks = distinct_checks(
        [
            ("a", f"{PYTEST} tests/test_a.py"),
            ("b", f"{PYTEST} tests/test_a.py tests/test_b.py"),
            ("c", f"{PYTEST} tests/test_b.py::test_one tests/test_c.py"),
            ("d", "npm test"),
        ]
    )
    merged, other = checks
    assert merged.command == f"{PYTEST} tests/test_a.py tests/test_b.py tests/test_c.py"
    assert merged.phases == ("a", "b", "c")
    assert [(p.command, p.phases) for p in merged.parts] == [
        (f"{PYTEST} tests/test_a.py", ("a",)),
        (f"{PYTEST} tests/test_a.py tests/test_b.py", ("b",)),
        (f"{PYTEST} tests/test_b.py::test_one tests/test_c.py", ("c",)),
    ]
    assert other == IntegrationCheck("npm test", ("d",))


def test_a_directory_covers_the_files_under_it_named_before_or_after() -> None:
    (check,) = distinct_checks(
        [("a", "pytest tests/unit/test_x.py"), ("b", "pytest tests/unit"),
         ("c", "pytest tests/unit/test_y.py::test_z")]
    )  # fmt: skip
    assert check.command == "pytest tests/unit"
    assert len(check.parts) == 3


def test_different_runners_options_and_shell_commands_are_never_merged() -> None:
    asked = [
        ("a", "pytest tests/test_a.py"),
        ("b", "pytest -x tests/test_b.py"),  # other options: another runner
        ("c", "pytest -c a.cfg tests/test_c.py"),  # -c's value is no test file
        ("d", "pytest -c b.cfg tests/test_c.py"),
        ("e", "pytest tests/test_a.py && rm -rf build"),  # shell: as written
        ("f", "pytest tests/test_a.py && rm -rf build"),
        ("g", "pytest $TESTS"),
        ("h", "pytest"),  # the whole suite: not merged with file lists
    ]
    commands = [c.command for c in distinct_checks(asked)]
    assert commands == [
        "pytest tests/test_a.py",
        "pytest -x tests/test_b.py",
        "pytest -c a.cfg tests/test_c.py",
        "pytest -c b.cfg tests/test_c.py",
        "pytest tests/test_a.py && rm -rf build",
        "pytest $TESTS",
        "pytest",
    ]
    assert all(not c.parts for c in distinct_checks(asked))


@pytest.mark.parametrize(
    ("word", "is_test"),
    [
        ("tests/test_a.py", True),
        ("test_a.py", True),
        ("pkg/a_test.go", True),
        ("src/app.spec.ts", True),
        ("tests", True),
        ("tests/test_a.py::TestX::test_y", True),
        ("setup.cfg", False),
        ("-k", False),
        ("--rootdir=tests", False),
        ("../tests/test_a.py", False),
        ("src/app.py", False),
    ],
)
def test_what_counts_as_a_test_path(word: str, is_test: bool) -> None:
    assert is_test_path(word) is is_test


def test_a_path_after_an_option_is_its_value_unless_the_option_is_a_flag() -> None:
    assert split_runner(["pytest", "--rootdir", "tests"]) == (("pytest", "--rootdir", "tests"), ())
    assert split_runner(["pytest", "-q", "tests"]) == (("pytest", "-q"), ("tests",))


def result(
    command: str, phases: tuple[str, ...], code: int, part_of: str | None = None
) -> CheckResult:
    return CheckResult(command, phases, code, "", 0.1, False, part_of)


def test_a_failed_merged_command_names_the_phases_whose_own_command_fails() -> None:
    merged = "pytest tests/test_a.py tests/test_b.py"
    results = [
        result(merged, ("a", "b"), 1),
        result("pytest tests/test_a.py", ("a",), 0, merged),
        result("pytest tests/test_b.py", ("b",), 1, merged),
        result("make lint", ("c",), 0),
    ]
    assert failed_phases(results) == ("b",)
    # each passing alone: only together do they fail, so both are named
    together = [results[0], results[1], result("pytest tests/test_b.py", ("b",), 0, merged)]
    assert failed_phases(together) == ("a", "b")
    assert failed_phases([result("make lint", ("c", "a"), 2)]) == ("a", "c")


def test_merged_checks_survive_the_trip_and_a_nested_part_is_refused() -> None:
    (check,) = distinct_checks([("a", "pytest tests/a_test.py"), ("b", "pytest tests/b_test.py")])
    task = IntegrationTask(
        run_id="r1", attempt=1, repo_url="/srv/o.git", base_branch="main",
        branch="sa/integration/r1", phases=(IntegrationPhase("a", "sa/a", "1" * 40),),
        checks=(check,), push_ref="refs/superagent/attempts/r1/_integration/1",
    )  # fmt: skip
    assert IntegrationTask.from_payload(task.to_payload()) == task
    payload = task.to_payload()
    payload["checks"][0]["parts"][0]["parts"] = [{"command": "x", "phases": ["a"]}]
    with pytest.raises(UsageError, match=r"checks\[0\].parts\[0\].parts must be a list"):
        IntegrationTask.from_payload(payload)
