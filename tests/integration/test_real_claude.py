"""The claude-code backend and the fake against the real Claude Code CLI, pinned version.

Runs only when SUPERAGENT_REAL_CLAUDE names a `claude` binary of the pinned version
(`make real-claude` installs the pin of control/pins.json under .cache/ and `make test`
points SUPERAGENT_REAL_CLAUDE at it). No request
leaves the machine: the API address is a closed port on loopback, the key is fake.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from control.messages import AgentOptions
from control.worker.agents import AgentRequest, get_backend
from control.worker.agents.claude_code import PINNED_VERSION, check_claude_version
from tests.fakes.agents import FAKE_CLAUDE, credential_file, phase_task

REAL = os.environ.get("SUPERAGENT_REAL_CLAUDE", "")


def _real_version() -> str | None:
    if not REAL or not os.access(REAL, os.X_OK):
        return None
    try:
        done = subprocess.run(
            [REAL, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.split()[0] if done.stdout.split() else None


pytestmark = pytest.mark.skipif(
    _real_version() != PINNED_VERSION,
    reason=(
        f"set SUPERAGENT_REAL_CLAUDE to a Claude Code {PINNED_VERSION} binary to run these"
        if not REAL
        else f"SUPERAGENT_REAL_CLAUDE={REAL} is not an executable Claude Code {PINNED_VERSION}"
    ),
)


def _offline_env(home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",  # discard port: refused at once
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }


def test_version_answers_as_the_check_expects() -> None:
    assert check_claude_version(PINNED_VERSION, REAL) == PINNED_VERSION
    fake = subprocess.run([str(FAKE_CLAUDE), "--version"], capture_output=True, text=True)
    real = subprocess.run([REAL, "--version"], capture_output=True, text=True, timeout=60)
    assert fake.stdout == real.stdout


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["-p", "--max-turnz", "3"], "x"),
        (["-p", "--model"], "x"),
        (["-p", "--output-format", "yaml"], "x"),
        (["-p", "--permission-mode", "yolo"], "x"),
        (["-p", "--output-format", "stream-json"], "x"),
        (["-p", "--output-format", "json"], ""),
    ],
)
def test_the_fake_refuses_what_the_real_one_refuses(
    tmp_path: Path, argv: list[str], stdin: str
) -> None:
    env = {**os.environ, **_offline_env(tmp_path / "home")}
    runs = [
        subprocess.run(
            [program, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        for program in (REAL, str(FAKE_CLAUDE))
    ]
    real, fake = runs
    assert (fake.returncode, fake.stderr.strip()) == (real.returncode, real.stderr.strip())


def _request(tmp_path: Path, *, credentials: bool) -> AgentRequest:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = _offline_env(tmp_path / "home")
    if not credentials:
        env.update({"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": ""})
    return AgentRequest(
        phase=phase_task(
            "hello", "Create hello.txt containing the word hello.", deliverables=("hello.txt",)
        ),
        checkout=checkout,
        log_path=tmp_path / "logs" / "1-hello-a1.log",
        options=AgentOptions(
            model="sonnet",
            permission_mode="acceptEdits",
            allowed_tools=("Read", "Write", "Edit"),
            max_turns=3,
            max_budget_usd=0.5,
            extra={"executable": REAL},
        ),
        wall_timeout_s=240,
        silence_timeout_s=180,
        credential_file=credential_file(tmp_path, "ANTHROPIC_API_KEY=sk-ant-api03-fake-000\n")
        if credentials
        else None,
        env=env,
    )


def test_no_network_is_a_failure_never_done(tmp_path: Path) -> None:
    request = _request(tmp_path, credentials=True)
    result = get_backend("claude-code").run(request)
    assert result.status == "failed", result
    # It came from the CLI's own result event (so every flag we passed was accepted).
    assert result.subtype == "success"  # sic: Claude Code flags API errors with is_error only
    assert result.session_id
    assert "API Error" in result.reason
    assert "unknown option" not in request.log_path.read_text()
    assert "sk-ant-api03-fake-000" not in request.log_path.read_text()


def test_not_logged_in_is_a_failure(tmp_path: Path) -> None:
    result = get_backend("claude-code").run(_request(tmp_path, credentials=False))
    assert result.status == "failed"
    assert "Not logged in" in result.reason


def test_a_session_lives_in_the_configuration_directory_for_the_real_one_and_the_fake(
    tmp_path: Path,
) -> None:
    """`--resume` finds a session only in $CLAUDE_CONFIG_DIR: another account's directory
    holds none, and both CLIs say so alike."""
    env = {**os.environ, **_offline_env(tmp_path / "home"),
           "ANTHROPIC_API_KEY": "sk-ant-api03-fake-000"}  # fmt: skip
    session = "0b7e4c1a-1111-4222-8333-944455556666"
    runs = []
    for program in (REAL, str(FAKE_CLAUDE)):
        config = tmp_path / f"config-{len(runs)}"
        config.mkdir()
        runs.append(subprocess.run(
            [program, "-p", "--output-format", "json", "--resume", session], input="go on",
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**env, "CLAUDE_CONFIG_DIR": str(config)},
        ))  # fmt: skip
    real, fake = runs
    assert (fake.returncode, fake.stderr.strip()) == (real.returncode, real.stderr.strip())
    assert real.stderr.strip() == f"No conversation found with session ID: {session}"
    assert (tmp_path / "config-0" / ".claude.json").is_file()  # the real one kept its state there
