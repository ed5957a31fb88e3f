"""The codex, gemini and opencode backends and fakes against the real CLIs, at their pins.

Each CLI runs when `make real-agents` installed its pin under .cache/agents/ (or
SUPERAGENT_REAL_CODEX / _GEMINI / _OPENCODE names a binary of the pinned version); else
its tests skip. No request leaves the machine: codex, gemini and opencode talk to stubs of
their vendors' APIs on loopback (tests/fakes/vendor_api.py; opencode through its documented
custom openai-compatible provider), and the rest needs no model: versions, refusals of
unknown flags and of missing credentials, our command lines. Codex, gemini and opencode resume
their real sessions for a feedback round.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from control.messages import AgentOptions, Feedback
from control.pins import load
from control.worker.agents import AgentRequest, get_backend
from control.worker.agents.codex import build_argv as codex_argv
from control.worker.agents.gemini import build_argv as gemini_argv
from control.worker.prompt import completion_marker
from tests.fakes.agents import FAKE_BIN, phase_task
from tests.fakes.vendor_api import RESET_EPOCH, serving

pytestmark = pytest.mark.slow  # a real CLI starts in seconds, and these run a dozen

ROOT = Path(__file__).resolve().parents[2]
PINS = load()["agents"]
BINARY = {"codex": "codex", "gemini": "gemini", "opencode": "opencode"}


def real(name: str) -> str | None:
    found = os.environ.get(f"SUPERAGENT_REAL_{name.upper()}") or str(
        ROOT / ".cache" / "agents" / f"{name}-{PINS[name]['version']}" / "node_modules" / ".bin"
        / BINARY[name]
    )  # fmt: skip
    return found if os.access(found, os.X_OK) else None


def need(name: str) -> str:
    found = real(name)
    if found is None:
        pytest.skip(f"{name} {PINS[name]['version']} is not installed: `make real-agents`")
    return found


def run(argv: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        cwd=home, env={"PATH": os.environ["PATH"], "HOME": str(home), **env}, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["codex", "gemini", "opencode"])
def test_the_version_is_the_pin_and_the_fake_answers_alike(name: str, tmp_path: Path) -> None:
    binary = need(name)
    found = run([binary, "--version"], tmp_path / "home")
    fake = run([str(FAKE_BIN / name), "--version"], tmp_path / "home")
    assert found.returncode == 0 and PINS[name]["version"] in found.stdout
    assert fake.stdout.strip() == found.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("codex", ["exec", "--json", "--bogus-flag", "-"]),
        ("gemini", ["-p", "x", "--output-format", "stream-json", "--bogus-flag"]),
        ("opencode", ["run", "--format", "json", "--bogus-flag"]),
    ],
)
def test_an_unknown_flag_is_refused_by_the_real_cli_and_the_fake_alike(
    name: str, argv: list[str], tmp_path: Path
) -> None:
    binary = need(name)
    found = run([binary, *argv], tmp_path / "home")
    fake = run([str(FAKE_BIN / name), *argv], tmp_path / "home")
    assert found.returncode == fake.returncode != 0

    def last_words(text: str) -> str:
        found = re.search(r"(Unknown arguments?: .*|error: unexpected argument .*)", text)
        return found.group(1).strip() if found else ""

    # opencode sometimes exits before its last stderr line is out: compare what was said.
    said = last_words(found.stderr)
    assert said == last_words(fake.stderr) or (name == "opencode" and not said)
    assert last_words(fake.stderr) != ""


def test_codex_accepts_every_flag_of_our_command_line(tmp_path: Path) -> None:
    binary = need("codex")
    request = AgentRequest(
        phase=phase_task(), checkout=tmp_path, log_path=tmp_path / "log",
        options=AgentOptions(model="gpt-5"),
    )  # fmt: skip
    argv = codex_argv(binary, request)
    assert run([*argv, "--help"], tmp_path / "home").returncode == 0  # clap parses all first
    assert run([*argv, "--nope", "--help"], tmp_path / "home").returncode == 2
    resume = codex_argv(binary, _resuming(request, "0b7e4c1a-1111-4222-8333-944455556666"))
    assert "resume" in resume
    said = run([*resume, "--help"], tmp_path / "home")
    assert said.returncode == 0 and "codex exec resume" in said.stdout


def _resuming(request: AgentRequest, session: str) -> AgentRequest:
    feedback = Feedback(attempt=1, reason="tests failed", session_id=session)
    return replace(request, phase=replace(request.phase, feedback=feedback), resume_session=session)


def test_gemini_takes_our_resume_flag_and_looks_for_the_session(tmp_path: Path) -> None:
    binary = need("gemini")
    request = AgentRequest(phase=phase_task(), checkout=tmp_path, log_path=tmp_path / "l")
    argv = gemini_argv(binary, _resuming(request, "6f2d9a10-2222-4333-8444-a55566667777"))
    found = run(argv, tmp_path / "home", GEMINI_API_KEY="sk-test-0123456789abcdefghij")
    assert found.returncode == 42, found.stderr  # past the flags: no such session here
    assert "Error resuming session" in found.stderr


def test_gemini_takes_our_command_line_and_refuses_without_a_credential(tmp_path: Path) -> None:
    binary = need("gemini")
    request = AgentRequest(phase=phase_task(), checkout=tmp_path, log_path=tmp_path / "l")
    found = run(gemini_argv(binary, request), tmp_path / "home")
    fake = run(gemini_argv(str(FAKE_BIN / "gemini"), request), tmp_path / "home")
    assert found.returncode == fake.returncode == 41  # past the flags, refused at auth
    assert found.stderr.strip().splitlines()[-1] == fake.stderr.strip().splitlines()[-1]


def _request(tmp_path: Path, model: str, key: str, **env: str) -> AgentRequest:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    creds = tmp_path / "account.env"
    creds.write_text(f"{key}=sk-test-0123456789abcdefghij\n")
    creds.chmod(0o600)
    return AgentRequest(
        phase=phase_task("api", "Say hi and nothing else, then end as asked."), checkout=checkout,
        log_path=tmp_path / "logs" / "agent.log", options=AgentOptions(model=model),
        credential_file=creds, wall_timeout_s=120, silence_timeout_s=60,
        env={"HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"], **env},
    )  # fmt: skip


def _codex_home(tmp_path: Path, url: str) -> None:
    config = tmp_path / "home" / ".codex" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'model_provider = "stub"\n[model_providers.stub]\nname = "stub"\n'
        f'base_url = "{url}/v1"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"\n'
        "supports_websockets = false\nrequest_max_retries = 0\nstream_max_retries = 0\n"
    )


def test_the_real_codex_through_the_backend_against_a_stub_api(tmp_path: Path) -> None:
    binary = need("codex")
    with serving("openai") as url:
        _codex_home(tmp_path, url)
        request = _request(tmp_path, "gpt-5", "OPENAI_API_KEY")
        request = AgentRequest(**{**request.__dict__, "options": AgentOptions(
            model="gpt-5", extra={"executable": binary})})  # fmt: skip
        result = get_backend("codex").run(request)
    assert result.status == "ok", result.reason
    assert completion_marker("api") in (result.result_text or "")
    assert result.usage == {"input_tokens": 1200, "cached_input_tokens": 200, "output_tokens": 300}
    assert result.cost_estimated and result.cost_usd == pytest.approx(0.004275)
    assert "sk-test-0123456789abcdefghij" not in request.log_path.read_text()


def test_the_real_codex_usage_limit_is_rate_limited_with_its_reset(tmp_path: Path) -> None:
    binary = need("codex")
    with serving("openai", limited=True) as url:
        _codex_home(tmp_path, url)
        request = _request(tmp_path, "gpt-5", "OPENAI_API_KEY", TZ="UTC")
        request = AgentRequest(**{**request.__dict__, "options": AgentOptions(
            model="gpt-5", extra={"executable": binary})})  # fmt: skip
        os.environ["TZ"] = "UTC"  # the reset is said in local time: read it in the same zone
        try:
            result = get_backend("codex").run(request)
        finally:
            del os.environ["TZ"]
    assert result.status == "rate_limited", result.reason
    assert result.rate_limit_reset == RESET_EPOCH - RESET_EPOCH % 60


def _gemini_home(tmp_path: Path) -> None:
    settings = tmp_path / "home" / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))


@pytest.mark.parametrize("limited", [False, True])
def test_the_real_gemini_through_the_backend_against_a_stub_api(
    tmp_path: Path, limited: bool
) -> None:
    binary = need("gemini")
    _gemini_home(tmp_path)
    with serving("gemini", limited=limited) as url:
        request = _request(tmp_path, "gemini-2.5-pro", "GEMINI_API_KEY",
                           GOOGLE_GEMINI_BASE_URL=url)  # fmt: skip
        request = AgentRequest(**{**request.__dict__, "options": AgentOptions(
            model="gemini-2.5-pro", extra={"executable": binary})})  # fmt: skip
        result = get_backend("gemini").run(request)
    if limited:
        assert result.status == "rate_limited", result.reason
    else:
        assert result.status == "ok", result.reason
        assert result.usage["output_tokens"] == 300 and result.cost_estimated


def _opencode_home(tmp_path: Path, url: str) -> None:
    """opencode's documented custom provider: the openai-compatible one at the stub, its
    key from the environment, a model priced 1.25/10/0.125 per million tokens."""
    config = tmp_path / "home" / ".config" / "opencode" / "opencode.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"stub": {
            "npm": "@ai-sdk/openai-compatible", "name": "stub",
            "options": {"baseURL": f"{url}/v1", "apiKey": "{env:OPENAI_API_KEY}"},
            "models": {"stub-model": {
                "name": "stub", "cost": {"input": 1.25, "output": 10, "cache_read": 0.125}}},
        }},
    }))  # fmt: skip


def _opencode_request(tmp_path: Path, binary: str) -> AgentRequest:
    request = _request(tmp_path, "stub/stub-model", "OPENAI_API_KEY",
                       OPENCODE_DISABLE_MODELS_FETCH="true")  # fmt: skip
    return replace(request, options=AgentOptions(
        model="stub/stub-model", extra={"executable": binary, "exit_grace_s": 5.0}))  # fmt: skip


def test_the_real_opencode_through_the_backend_against_a_stub_api_then_resumed(
    tmp_path: Path,
) -> None:
    binary = need("opencode")
    with serving("chat") as url:
        _opencode_home(tmp_path, url)
        request = _opencode_request(tmp_path, binary)
        result = get_backend("opencode").run(request)
        assert result.status == "ok", result.reason
        assert completion_marker("api") in (result.result_text or "")
        assert result.usage == {"input_tokens": 1200, "cached_input_tokens": 200,
                                "output_tokens": 300}  # fmt: skip
        assert not result.cost_estimated and result.cost_usd == pytest.approx(0.004275)
        assert result.session_id and result.session_id.startswith("ses_")
        assert "sk-test-0123456789abcdefghij" not in request.log_path.read_text()
        # A feedback round on the same worker and slot: the real CLI goes on in that session.
        again = get_backend("opencode").run(_resuming(request, result.session_id))
    assert again.status == "ok", again.reason
    assert again.session_id == result.session_id


def test_the_real_opencode_rate_limit_is_rate_limited_not_waited_out(tmp_path: Path) -> None:
    binary = need("opencode")
    with serving("chat", limited=True) as url:
        _opencode_home(tmp_path, url)
        started = time.monotonic()
        result = get_backend("opencode").run(_opencode_request(tmp_path, binary))
    assert result.status == "rate_limited", result.reason
    assert "Rate limit reached" in result.reason
    assert time.monotonic() - started < 60  # ended at its first notice, not after its retries


def test_the_real_codex_resumes_its_thread_for_a_feedback_round(tmp_path: Path) -> None:
    binary = need("codex")
    with serving("openai") as url:
        _codex_home(tmp_path, url)
        request = _request(tmp_path, "gpt-5", "OPENAI_API_KEY")
        request = replace(request, options=AgentOptions(model="gpt-5",
                                                        extra={"executable": binary}))  # fmt: skip
        first = get_backend("codex").run(request)
        assert first.status == "ok" and first.session_id, first.reason
        again = get_backend("codex").run(_resuming(request, first.session_id))
    assert again.status == "ok", again.reason
    assert again.session_id == first.session_id
    argv_lines = [line for line in again.log_path.read_text().splitlines() if "argv [" in line]
    argv = json.loads(argv_lines[-1].split("argv ", 1)[1])
    assert argv[-3:] == ["resume", first.session_id, "-"]


def test_the_real_gemini_resumes_its_session_for_a_feedback_round(tmp_path: Path) -> None:
    binary = need("gemini")
    _gemini_home(tmp_path)
    with serving("gemini") as url:
        request = _request(tmp_path, "gemini-2.5-pro", "GEMINI_API_KEY",
                           GOOGLE_GEMINI_BASE_URL=url)  # fmt: skip
        request = replace(request, options=AgentOptions(model="gemini-2.5-pro",
                                                        extra={"executable": binary}))  # fmt: skip
        first = get_backend("gemini").run(request)
        assert first.status == "ok" and first.session_id, first.reason
        again = get_backend("gemini").run(_resuming(request, first.session_id))
    assert again.status == "ok", again.reason
    assert again.session_id == first.session_id
