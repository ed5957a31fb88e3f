"""The command backend, driven with small real scripts standing in for agent CLIs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from control.errors import UsageError
from control.messages import AgentOptions
from control.worker.agents import AgentRequest, get_backend
from control.worker.agents.command import render
from tests.fakes.agents import API_KEY, credential_file, phase_task

BACKEND = get_backend("command")
PY = sys.executable


def _request(
    tmp_path: Path, code: str, extra: dict[str, Any] | None = None, **kw: Any
) -> AgentRequest:
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    template = extra.pop("command") if extra and "command" in extra else [PY, "-c", code]
    return AgentRequest(
        phase=phase_task("docs", "Write the README.", deliverables=("README.md",)),
        checkout=checkout,
        log_path=tmp_path / "logs" / "1-docs-a1.log",
        options=AgentOptions(model="gpt-5-codex", command=template, extra=extra or {}),
        wall_timeout_s=kw.pop("wall_timeout_s", 30.0),
        kill_grace_s=1.0,
        **kw,
    )


def test_prompt_on_stdin_and_success(tmp_path: Path) -> None:
    code = (
        "import sys; p = sys.stdin.read(); open('README.md', 'w').write(p); print('wrote README')"
    )
    request = _request(tmp_path, code)
    result = BACKEND.run(request)
    assert result.status == "ok", result.reason
    assert (request.checkout / "README.md").read_text() == request.prompt()
    assert result.result_text and "wrote README" in result.result_text


def test_prompt_in_a_file_and_placeholders_per_element(tmp_path: Path) -> None:
    code = (
        "import sys, json; print(json.dumps({'argv': sys.argv[1:], "
        "'prompt': open(sys.argv[1]).read()}))"
    )
    template = [PY, "-c", code, "{prompt_file}", "--cd={checkout}", "--model", "{model}"]
    request = _request(tmp_path, code, {"command": template})
    result = BACKEND.run(request)
    assert result.status == "ok", result.reason
    seen = json.loads(result.result_text or "")
    assert seen["prompt"] == request.prompt()
    assert seen["argv"][1:] == [f"--cd={request.checkout}", "--model", "gpt-5-codex"]
    # The prompt file lived outside the checkout and is gone.
    assert not Path(seen["argv"][0]).exists()
    assert not str(seen["argv"][0]).startswith(str(request.checkout))


def test_prompt_as_json_on_stdin(tmp_path: Path) -> None:
    code = "import sys, json; d = json.load(sys.stdin); print(d['phase_id'], d['deliverables'])"
    result = BACKEND.run(_request(tmp_path, code, {"prompt_via": "json"}))
    assert result.status == "ok"
    assert result.result_text == "docs ['README.md']\n"


def test_exit_0_with_no_output_is_a_failure_unless_allowed(tmp_path: Path) -> None:
    assert BACKEND.run(_request(tmp_path, "pass")).status == "failed"
    assert BACKEND.run(_request(tmp_path, "pass", {"success": "exit0"})).status == "ok"


def test_a_nonzero_exit_is_a_failure_with_stderr(tmp_path: Path) -> None:
    code = "import sys; sys.stderr.write('model not found\\n'); sys.exit(2)"
    result = BACKEND.run(_request(tmp_path, code))
    assert result.status == "failed"
    assert result.exit_code == 2
    assert "model not found" in result.reason


def test_a_rate_limit_message_is_rate_limited(tmp_path: Path) -> None:
    code = "import sys; print('ERROR: usage limit reached|1760000400'); sys.exit(1)"
    result = BACKEND.run(_request(tmp_path, code))
    assert result.status == "rate_limited"
    assert result.rate_limit_reset == 1760000400.0


def test_watchdogs_apply(tmp_path: Path) -> None:
    hang = "import time\nwhile True:\n    print('.', flush=True); time.sleep(0.1)"
    assert BACKEND.run(_request(tmp_path, hang, wall_timeout_s=1.0)).status == "timeout"
    quiet = "import time; time.sleep(300)"
    result = BACKEND.run(_request(tmp_path, quiet, silence_timeout_s=0.8))
    assert result.status == "timeout"
    assert "printed nothing" in result.reason


def test_credentials_reach_the_environment_not_argv_or_log(tmp_path: Path) -> None:
    code = "import os; print('key', os.environ.get('ANTHROPIC_API_KEY'))"
    request = _request(tmp_path, code, credential_file=credential_file(tmp_path))
    result = BACKEND.run(request)
    assert result.status == "ok"
    log = request.log_path.read_text()
    assert API_KEY not in log
    assert "key [REDACTED]" in log
    assert API_KEY not in (result.result_text or "")


def test_a_missing_program_is_a_failure(tmp_path: Path) -> None:
    result = BACKEND.run(_request(tmp_path, "", {"command": ["no-such-agent-cli", "exec"]}))
    assert result.status == "failed"
    assert "not found" in result.reason


def test_the_template_must_be_an_argv_list(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="JSON list"):
        BACKEND.run(_request(tmp_path, "", {"command": "codex exec -"}))


def test_render_refuses_a_model_placeholder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no model"):
        render(["agent", "--model={model}"], prompt_file=None, checkout=tmp_path, model=None)
    with pytest.raises(UsageError, match="stdin"):
        render(["agent", "{prompt_file}"], prompt_file=None, checkout=tmp_path, model="m")
    # Braces that are not placeholders stay as they are.
    assert render(['{"a": 1}'], prompt_file=None, checkout=tmp_path, model=None) == ['{"a": 1}']
