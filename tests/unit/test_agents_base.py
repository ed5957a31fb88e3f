"""Agent options, credentials, the registry and the request built from a phase task."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from control.errors import UsageError
from control.messages import PhaseTask, PrerequisiteRef, to_b64
from control.worker.agents import (
    AgentOptions,
    AgentResult,
    backend_names,
    get_backend,
    load_credentials,
    request_for_task,
)
from tests.fakes.agents import credential_file


def test_registry() -> None:
    assert backend_names() == ["claude-code", "codex", "command", "gemini", "opencode", "replay"]
    assert get_backend("replay").name == "replay"
    with pytest.raises(UsageError, match="known: claude-code, codex, command, gemini, opencode"):
        get_backend("gpt")


def test_options_from_a_task_object() -> None:
    options = AgentOptions.from_dict(
        {"model": "sonnet", "allowed_tools": ["Read"], "max_turns": 5, "command": ["x"],
         "output_format": "json"}
    )  # fmt: skip
    assert options.backend == "claude-code"
    assert options.model == "sonnet"
    assert options.allowed_tools == ("Read",)
    assert options.command == ("x",)
    assert options.extra == {"output_format": "json"}


def test_the_options_the_spec_builds_arrive_as_they_were_sent() -> None:
    """One class: the spec builds it, the task carries it, the worker reads it back."""
    sent = AgentOptions(
        backend="command", command=("agent", "{prompt_file}"), model="m", allowed_tools=("Read",),
        permission_mode="plan", max_turns=3, max_budget_usd=0.5,
        resume_command=("agent", "--resume", "{session_id}"), session_pattern="id: (\\w+)",
        fallback=(("codex", None),),
    )  # fmt: skip
    assert AgentOptions.from_dict(sent.to_dict()) == replace(sent, fallback=())


@pytest.mark.parametrize(
    "data",
    [
        {"model": "--dangerously-skip-permissions"},
        {"allowed_tools": ["-x"]},
        {"allowed_tools": "Read,Edit"},
        {"permission_mode": "yolo"},
        {"max_turns": 0},
        {"max_turns": 2.5},
        {"max_budget_usd": 0},
        {"command": "codex exec -"},
        {"resume_command": ["codex", 1]},
        {"session_pattern": 3},
    ],
)
def test_bad_options_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        AgentOptions.from_dict(data)


def test_credentials_file(tmp_path: Path) -> None:
    path = credential_file(
        tmp_path,
        "# worker credentials\n\nexport ANTHROPIC_API_KEY='sk-1'\n"
        'CLAUDE_CODE_OAUTH_TOKEN="t=2"\n',
    )
    assert load_credentials(path) == {"ANTHROPIC_API_KEY": "sk-1", "CLAUDE_CODE_OAUTH_TOKEN": "t=2"}


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="0600"):
        load_credentials(credential_file(tmp_path, "A=secret-value\n", mode=0o640))


def test_credentials_errors_never_show_values(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_credentials(credential_file(tmp_path, "not a line with secret-value\n"))
    assert "secret-value" not in str(caught.value)
    with pytest.raises(UsageError, match="cannot read"):
        load_credentials(tmp_path / "absent")


def test_result_to_dict_is_json(tmp_path: Path) -> None:
    result = AgentResult(
        status="ok", reason="r", backend="replay", log_path=tmp_path / "x.log",
        usage={"input_tokens": 1}, permission_denials=({"tool_name": "Bash"},),
        warnings=("w",),
    )  # fmt: skip
    data = json.loads(json.dumps(result.to_dict()))
    assert data["log_path"] == str(tmp_path / "x.log")
    assert data["permission_denials"] == [{"tool_name": "Bash"}]


def test_request_for_task(tmp_path: Path) -> None:
    task = PhaseTask(
        run_id="r1", phase_id="api", attempt=2, title="API", task="Build it.",
        branch="sa/api", repo_url="file:///repo", base_branch="main",
        deliverables=("app.py",), verify=("pytest",),
        prerequisites=(PrerequisiteRef("db", "sa/db", "c" * 40, "schema"),),
        agent={"backend": "replay", "model": None, "max_turns": 7},
        timeout_s=600, silence_s=60, project="blog",
        replay_files_b64={"app.py": to_b64(b"x = 1\r\n\xe9")},
    )  # fmt: skip
    name, request = request_for_task(task, checkout=tmp_path, log_path=tmp_path / "l.log")
    assert name == "replay"
    assert request.options.max_turns == 7
    assert request.options.extra["replay_files"] == {"app.py": b"x = 1\r\n\xe9"}
    assert request.wall_timeout_s == 600 and request.silence_timeout_s == 60
    assert request.phase is task  # the task itself, not a copy of its fields
    assert "blog" in request.prompt()
    default, _ = request_for_task(
        PhaseTask(**{**task.__dict__, "agent": {}}), checkout=tmp_path, log_path=tmp_path / "l"
    )
    assert default == "claude-code"
