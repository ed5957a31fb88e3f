"""The codex, gemini and opencode backends run their CLIs' fakes as real processes.

The fakes (tests/fakes/bin/agent-cli) take the real CLIs' flags and refuse others as they
do, and print the recorded event shapes; what the real CLIs do without a model is checked
in test_real_agent_clis.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from control.messages import AgentOptions, Feedback
from control.worker.agents import AgentRequest, get_backend
from tests.fakes.agents import fake_path, phase_task

SECRET = "sk-proj-TEST-SECRET-abcdefghijklmnopqrstuvwxyz0123456789ABCD"
VARIABLE = {"codex": "OPENAI_API_KEY", "gemini": "GEMINI_API_KEY", "opencode": "ANTHROPIC_API_KEY"}
MODEL = {"codex": "gpt-5", "gemini": "gemini-2.5-pro", "opencode": "anthropic/claude-sonnet-4-5"}
CLIS = ("codex", "gemini", "opencode")


def cli_request(
    tmp_path: Path, cli: str, scenario: str | dict[str, Any] = "success", *,
    credentials: bool = True, silence_s: float | None = 20.0,
) -> AgentRequest:  # fmt: skip
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    spec = {"scenario": scenario} if isinstance(scenario, str) else scenario
    spec.setdefault("files", {"app/health.py": "ok\n"})
    (tmp_path / "scenario.json").write_text(json.dumps(spec))
    creds = None
    if credentials:
        creds = tmp_path / "account.env"
        creds.write_text(f"{VARIABLE[cli]}={SECRET}\n")
        creds.chmod(0o600)
    return AgentRequest(
        phase=phase_task(
            "build-api",
            "Add a /health endpoint that answers 200, with its test.",
            deliverables=("app/health.py",),
        ),
        checkout=checkout,
        log_path=tmp_path / "logs" / "1-build-api-a1.log",
        options=AgentOptions(model=MODEL[cli], extra={"exit_grace_s": 1.0}),
        wall_timeout_s=30.0,
        silence_timeout_s=silence_s,
        credential_file=creds,
        env={
            "PATH": fake_path(),
            "FAKE_AGENT_SCENARIO_FILE": str(tmp_path / "scenario.json"),
            "FAKE_AGENT_DUMP": str(tmp_path / "dump.json"),
        },
        kill_grace_s=1.0,
    )


@pytest.mark.parametrize("cli", CLIS)
def test_success_writes_in_the_checkout_with_the_task_on_stdin_and_the_key_in_env(
    tmp_path: Path, cli: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in VARIABLE.values():  # the worker's own keys must not win over the account's
        monkeypatch.setenv(name, "sk-worker-own-key-should-not-win")
    request = cli_request(tmp_path, cli)
    result = get_backend(cli).run(request)
    assert result.status == "ok", result.reason
    assert (request.checkout / "app" / "health.py").read_text() == "ok\n"
    assert result.usage == {"input_tokens": 1200, "cached_input_tokens": 200, "output_tokens": 300}
    assert result.cost_usd and result.cost_usd > 0 and result.session_id
    assert result.cost_estimated == (cli != "opencode")  # opencode says its cost itself
    dump = json.loads((tmp_path / "dump.json").read_text())
    assert request.phase.task in dump["prompt"] and not any(
        request.phase.task in a for a in dump["argv"]
    )
    # The account's key, not the worker's own, and never on the command line or in the log.
    assert dump["credentials"] == {VARIABLE[cli]: hashlib.sha256(SECRET.encode()).hexdigest()}
    log = request.log_path.read_text()
    assert SECRET not in log and SECRET not in json.dumps(dump["argv"])
    assert f"credentials in the environment: {VARIABLE[cli]}" in log


@pytest.mark.parametrize("cli", CLIS)
def test_a_limit_notice_is_rate_limited_never_a_failure(tmp_path: Path, cli: str) -> None:
    reset = round(time.time()) + 7200 - (round(time.time()) + 7200) % 60
    started = time.monotonic()
    result = get_backend(cli).run(
        cli_request(tmp_path, cli, {"scenario": "rate_limit", "reset_epoch": reset})
    )
    assert result.status == "rate_limited", result.reason
    assert time.monotonic() - started < 15  # opencode retries forever: its first notice ends it
    if cli == "codex":
        assert result.rate_limit_reset == reset


@pytest.mark.parametrize("cli", CLIS)
def test_without_a_credential_the_cli_refuses_and_the_reason_says_so(
    tmp_path: Path, cli: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in VARIABLE.values():
        monkeypatch.delenv(name, raising=False)
    request = cli_request(tmp_path, cli, credentials=False)
    result = get_backend(cli).run(request)
    assert result.status == "failed"
    expected = {"codex": "401 Unauthorized", "gemini": "authentication failed",
                "opencode": "No API key found"}[cli]  # fmt: skip
    assert expected in result.reason


@pytest.mark.parametrize("cli", CLIS)
def test_no_completion_marker_is_a_failure(tmp_path: Path, cli: str) -> None:
    result = get_backend(cli).run(cli_request(tmp_path, cli, "no_marker"))
    assert result.status == "failed" and "completion marker" in result.reason


@pytest.mark.parametrize("cli", CLIS)
def test_a_silent_cli_is_ended_by_the_watchdog(tmp_path: Path, cli: str) -> None:
    result = get_backend(cli).run(cli_request(tmp_path, cli, "hang", silence_s=1.5))
    assert result.status == "timeout" and "silence watchdog" in result.reason


@pytest.mark.parametrize("cli", CLIS)
def test_a_missing_cli_is_a_failure_naming_it(tmp_path: Path, cli: str) -> None:
    request = cli_request(tmp_path, cli)
    request = AgentRequest(**{**request.__dict__, "env": {**request.env, "PATH": str(tmp_path)}})
    result = get_backend(cli).run(request)
    assert result.status == "failed" and "is not installed" in result.reason


SESSION = {"codex": "0b7e4c1a-1111-4222-8333-944455556666",
           "gemini": "6f2d9a10-2222-4333-8444-a55566667777",
           "opencode": "ses_22b0e38f8001GLZLyrWY12LJ"}  # fmt: skip
RESUME_ARGS = {"codex": ["resume", SESSION["codex"], "-"],
               "gemini": ["--resume", SESSION["gemini"]],
               "opencode": ["--session", SESSION["opencode"]]}  # fmt: skip


def _with_feedback(request: AgentRequest, session: str | None) -> AgentRequest:
    feedback = Feedback(attempt=1, reason="verify failed: pytest exit 1", worker="w1",
                        slot="0", backend="x", session_id=session)  # fmt: skip
    return replace(request, phase=replace(request.phase, feedback=feedback), resume_session=session)


def _sublist(part: list[str], whole: list[str]) -> bool:
    return any(whole[i : i + len(part)] == part for i in range(len(whole)))


@pytest.mark.parametrize("cli", CLIS)
def test_a_feedback_round_resumes_the_cli_session_told_only_what_failed(
    tmp_path: Path, cli: str
) -> None:
    request = _with_feedback(cli_request(tmp_path, cli), SESSION[cli])
    result = get_backend(cli).run(request)
    assert result.status == "ok", result.reason
    assert result.session_id == SESSION[cli]  # the same session went on
    dump = json.loads((tmp_path / "dump.json").read_text())
    assert _sublist(RESUME_ARGS[cli], dump["argv"]), dump["argv"]
    assert "verify failed: pytest exit 1" in dump["prompt"]
    assert request.phase.task not in dump["prompt"]  # the session knows the task already


@pytest.mark.parametrize("cli", CLIS)
def test_feedback_without_a_session_here_starts_fresh_with_the_task_and_the_failure(
    tmp_path: Path, cli: str
) -> None:
    hostile = "--dangerously-bypass-approvals-and-sandbox"
    for session in (None, hostile):  # none here, or one that is not an id: fresh either way
        request = _with_feedback(cli_request(tmp_path, cli), session)
        result = get_backend(cli).run(request)
        assert result.status == "ok", result.reason
        dump = json.loads((tmp_path / "dump.json").read_text())
        assert not {"resume", "--resume", "--session", hostile} & set(dump["argv"])
        assert (
            request.phase.task in dump["prompt"]
            and "verify failed: pytest exit 1" in dump["prompt"]
        )
