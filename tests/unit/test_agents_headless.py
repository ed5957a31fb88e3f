"""The codex, gemini and opencode parsers and verdicts, held to recorded real output.

tests/fixtures/agents/README.md says how each recording was made (the pinned CLI against
a stub of its vendor's API on loopback).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from control.messages import AgentOptions, Feedback
from control.process import ProcessOutcome
from control.worker.agents import AgentRequest, get_backend
from control.worker.agents.codex import CODEX, CodexReader
from control.worker.agents.codex import build_argv as codex_argv
from control.worker.agents.gemini import GEMINI, GeminiReader
from control.worker.agents.gemini import build_argv as gemini_argv
from control.worker.agents.headless import Cli, Reader, judge
from control.worker.agents.opencode import OPENCODE, OpencodeReader
from control.worker.agents.opencode import build_argv as opencode_argv
from control.worker.agents.prices import estimate_usd, price_of
from control.worker.prompt import completion_marker
from tests.fakes.agents import phase_task

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "agents"


def request(tmp_path: Path, model: str | None = None, **extra: object) -> AgentRequest:
    return AgentRequest(
        phase=phase_task("api", "Add the endpoint, with its tests, then say you are done."),
        checkout=tmp_path,
        log_path=tmp_path / "agent.log",
        options=AgentOptions(model=model, extra=extra),
    )


def outcome(exit_code: int | None = 0, **flags: bool) -> ProcessOutcome:
    return ProcessOutcome(
        exit_code=exit_code, timed_out=flags.get("timed_out", False), silent=False,
        cancelled=flags.get("cancelled", False), killed=False, duration_s=1.0,
        stdout_tail="", stderr_tail="", output_bytes=10,
        lingered=flags.get("lingered", False),
    )  # fmt: skip


def read(reader: Reader, name: str, *, marker: bool = False) -> Reader:
    for line in (RECORDED / name).read_text(encoding="utf-8").splitlines():
        if marker:  # the recording's answer, as an agent that saw the prompt would end it
            line = line.replace("SUPERAGENT-DONE", completion_marker("api"))
        reader.feed(line)
    return reader


def test_codex_success_recording(tmp_path: Path) -> None:
    req = request(tmp_path, "gpt-5")
    reading = read(CodexReader(req), "codex/exec-json-success.jsonl", marker=True).reading
    assert reading.session_id == "01a22b05-11e7-7530-9fc0-e829eedca79d"
    assert (reading.input_tokens, reading.cached_input_tokens, reading.output_tokens) == (
        1200, 200, 300,
    )  # fmt: skip
    assert reading.done and reading.failed is None and not reading.rate_limited
    result = judge(CODEX, req, outcome(0), reading)
    assert result.status == "ok" and result.session_id == reading.session_id
    # 1000 fresh in at 1.25, 200 cached at 0.125, 300 out at 10 per million
    assert result.cost_usd == pytest.approx(0.004275) and result.cost_estimated


def test_codex_usage_limit_recording_is_a_rate_limit_with_its_reset(tmp_path: Path) -> None:
    reading = read(CodexReader(request(tmp_path)), "codex/exec-json-usage-limit.jsonl").reading
    assert reading.rate_limited and reading.failed and "usage limit" in reading.failed
    # "try again at Mar 17th, 2030 5:46 PM", said in the machine's local time
    assert reading.rate_limit_reset == datetime(2030, 3, 17, 17, 46).timestamp()
    result = judge(CODEX, request(tmp_path), outcome(1), reading)
    assert result.status == "rate_limited" and result.rate_limit_reset == reading.rate_limit_reset


def test_gemini_success_recording(tmp_path: Path) -> None:
    req = request(tmp_path, "gemini-2.5-pro")
    reading = read(GeminiReader(req), "gemini/stream-json-success.jsonl", marker=True).reading
    assert reading.session_id == "0bb2e3a8-cba7-4497-8e0e-1e20c3748359" or reading.session_id
    assert (reading.input_tokens, reading.cached_input_tokens, reading.output_tokens) == (
        1200, 200, 300,
    )  # fmt: skip
    result = judge(GEMINI, req, outcome(0), reading)
    assert result.status == "ok" and result.cost_estimated
    assert result.cost_usd == estimate_usd(
        "gemini-2.5-pro", input_tokens=1200, cached_input_tokens=200, output_tokens=300
    )


def test_gemini_daily_quota_recording_is_a_rate_limit(tmp_path: Path) -> None:
    reading = read(GeminiReader(request(tmp_path)), "gemini/stream-json-daily-quota.jsonl").reading
    assert reading.rate_limited and "daily quota" in (reading.failed or "")
    result = judge(GEMINI, request(tmp_path), outcome(173), reading)
    assert result.status == "rate_limited" and result.rate_limit_reset is None


def test_opencode_success_recording_reports_its_own_cost(tmp_path: Path) -> None:
    req = request(tmp_path, "stub/stub-model")
    reading = read(OpencodeReader(req), "opencode/run-json-success.jsonl", marker=True).reading
    assert reading.session_id and reading.session_id.startswith("ses_")
    assert (reading.input_tokens, reading.cached_input_tokens, reading.output_tokens) == (
        1200, 200, 300,
    )  # fmt: skip
    result = judge(OPENCODE, req, outcome(0), reading)
    assert result.status == "ok" and result.cost_usd == pytest.approx(0.004275)
    assert not result.cost_estimated  # opencode said it


def test_opencode_rate_limit_log_lines_end_the_run_as_rate_limited(tmp_path: Path) -> None:
    reader = read(OpencodeReader(request(tmp_path)), "opencode/run-json-rate-limit.stderr")
    assert reader.reading.rate_limited and reader.reading.said_last_word
    result = judge(OPENCODE, request(tmp_path), outcome(-15, lingered=True), reader.reading)
    assert result.status == "rate_limited"
    assert "Rate limit reached" in result.reason


@pytest.mark.parametrize(
    ("cli", "reader", "recording"),
    [
        (CODEX, CodexReader, "codex/exec-json-success.jsonl"),
        (GEMINI, GeminiReader, "gemini/stream-json-success.jsonl"),
        (OPENCODE, OpencodeReader, "opencode/run-json-success.jsonl"),
    ],
)
def test_a_success_without_the_completion_marker_is_a_failure(
    tmp_path: Path, cli: Cli, reader: type, recording: str
) -> None:
    reading = read(reader(request(tmp_path)), recording).reading
    result = judge(cli, request(tmp_path), outcome(0), reading)
    assert result.status == "failed" and "completion marker" in result.reason


@pytest.mark.parametrize(
    ("cli", "reader", "recording"),
    [
        (CODEX, CodexReader, "codex/exec-json-success.jsonl"),
        (GEMINI, GeminiReader, "gemini/stream-json-success.jsonl"),
        (OPENCODE, OpencodeReader, "opencode/run-json-success.jsonl"),
    ],
)
def test_output_cut_before_the_final_event_is_a_failure_naming_the_exit(
    tmp_path: Path, cli: Cli, reader: type, recording: str
) -> None:
    lines = (RECORDED / recording).read_text().splitlines()
    cut = reader(request(tmp_path))
    for line in lines[:-1]:
        cut.feed(line)
    cut.feed("Segmentation fault")
    result = judge(cli, request(tmp_path), outcome(139), cut.reading)
    assert result.status == "failed" and "(exit 139) without its final event" in result.reason


def test_gemini_exit_codes_are_named(tmp_path: Path) -> None:
    reader = GeminiReader(request(tmp_path))
    result = judge(GEMINI, request(tmp_path), outcome(41), reader.reading)
    assert "authentication failed" in result.reason


def test_a_cancel_wins_over_a_rate_limit(tmp_path: Path) -> None:
    reading = read(CodexReader(request(tmp_path)), "codex/exec-json-usage-limit.jsonl").reading
    result = judge(CODEX, request(tmp_path), outcome(-15, cancelled=True), reading)
    assert result.status == "cancelled"


HOSTILE_LINES = (
    '{"type": 5}',
    "[1,2]",
    '{"type":"turn.completed","usage":"lots"}',
    '{"type":"result","stats":[],"status":"success"}',
    "{" * 5000,
    '{"type":"step_finish","part":{"cost":-9,"tokens":{"input":"x"}}}',
)


def test_hostile_lines_are_read_as_nothing(tmp_path: Path) -> None:
    for reader in (CodexReader, GeminiReader, OpencodeReader):
        r = reader(request(tmp_path))
        for line in HOSTILE_LINES:
            r.feed(line)
        assert r.reading.cost_usd is None or r.reading.cost_usd >= 0
        assert r.reading.input_tokens == 0


def test_argv_holds_flags_only_never_the_task(tmp_path: Path) -> None:
    feedback = Feedback(attempt=1, reason="tests failed", session_id="01a22b05-11e7")
    plain = request(tmp_path, "gpt-5")
    req = replace(
        plain, phase=replace(plain.phase, feedback=feedback), resume_session="01a22b05-11e7"
    )
    assert codex_argv("codex", req) == [
        "codex", "exec", "--json", "--color", "never", "--sandbox", "workspace-write",
        "-c", 'approval_policy="never"', "--model", "gpt-5", "resume", "01a22b05-11e7", "-",
    ]  # fmt: skip
    assert gemini_argv("gemini", request(tmp_path)) == [
        "gemini", "-p", "Carry out the task given above on stdin.", "--output-format",
        "stream-json", "--approval-mode", "yolo", "--skip-trust",
    ]  # fmt: skip
    assert opencode_argv("opencode", request(tmp_path, "anthropic/claude-sonnet-4-5")) == [
        "opencode", "run", "--format", "json", "--auto", "--print-logs", "--log-level", "WARN",
        "--model", "anthropic/claude-sonnet-4-5",
    ]  # fmt: skip
    for argv in (codex_argv("c", req), gemini_argv("g", req), opencode_argv("o", req)):
        assert not any(req.phase.task in a for a in argv)
    assert gemini_argv("g", req)[-4:] == ["--resume", "01a22b05-11e7", "--model", "gpt-5"]
    assert opencode_argv("o", req)[-2:] == ["--session", "01a22b05-11e7"]
    hostile = replace(req, resume_session="--dangerously-bypass-approvals-and-sandbox")
    for argv in (codex_argv("c", hostile), gemini_argv("g", hostile), opencode_argv("o", hostile)):
        assert "--dangerously-bypass-approvals-and-sandbox" not in argv


def test_prices_know_dated_and_prefixed_names_and_nothing_else() -> None:
    assert price_of("gpt-5-2025-08-07") == price_of("gpt-5") is not None
    assert price_of("anthropic/claude-sonnet-4-5") is not None
    assert price_of("mystery-model") is None
    assert estimate_usd("mystery", input_tokens=9, cached_input_tokens=0, output_tokens=9) is None


def test_the_backends_are_registered_by_name() -> None:
    for name in ("codex", "gemini", "opencode"):
        assert get_backend(name).name == name
