"""The prompt an agent gets for a phase."""

from __future__ import annotations

from control.worker.prompt import Prerequisite, build_prompt, completion_marker


def test_the_prompt_holds_every_part_in_order() -> None:
    prompt = build_prompt(
        phase_id="api",
        task="Build the REST API.\n",
        deliverables=["app/api.py", "tests/test_api.py"],
        verify=["pytest -q", "ruff check ."],
        prerequisites=[
            Prerequisite("models", "sa/models", "a" * 40, "User and Post models\nwith tests"),
            Prerequisite("db", "sa/db", "b" * 40),
        ],
        project="blog",
    )
    assert prompt.startswith("You are working on phase 'api' of the project 'blog'.")
    order = ["## Task", "Build the REST API.", "## Deliverables", "- app/api.py",
             "## Verification", "    pytest -q", "## Already done", "## Rules"]  # fmt: skip
    positions = [prompt.index(part) for part in order]
    assert positions == sorted(positions)
    assert "- models (branch sa/models, commit aaaaaaaaaaaa): User and Post models with tests" in (
        prompt
    )
    assert "- db (branch sa/db, commit bbbbbbbbbbbb)\n" in prompt
    assert prompt.endswith(completion_marker("api") + "\n")


def test_sections_without_content_are_left_out() -> None:
    prompt = build_prompt(phase_id="p", task="Do it.")
    assert "## Deliverables" not in prompt
    assert "## Verification" not in prompt
    assert "## Already done" not in prompt
    assert "## Task\n\nDo it." in prompt


def test_the_marker_names_the_phase() -> None:
    assert completion_marker("build-api") == "SUPERAGENT-PHASE-DONE build-api"


def test_task_text_is_passed_through_untouched() -> None:
    task = "Use {{ jinja }} and $(shell) and `backticks` literally; '; rm -rf / #"
    assert task in build_prompt(phase_id="p", task=task)
