"""The claude-code backend: `claude -p` headless in the checkout, judged by its result.

The prompt goes on stdin, the credentials in the child's environment, the spec's
limits as flags. Output is stream-json by default, so the log is live and the silence
watchdog sees progress; the final `result` event decides, never the exit code alone:
Claude Code has reported rate limits as success, answered runs it got no prompt for
with exit 0, and hung.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from control.errors import UnavailableError, UsageError
from control.pins import CLAUDE_CODE_VERSION
from control.process import ProcessOutcome, Redactor
from control.worker.agents.base import (
    RESULT_TEXT_LIMIT,
    AgentRequest,
    AgentResult,
    excerpt,
    finished_result,
    resuming,
    watchdog_result,
)
from control.worker.agents.headless import Ended, Launch, json_event, start
from control.worker.agents.ratelimit import looks_rate_limited, reset_epoch, starts_rate_limited

NAME = "claude-code"
PINNED_VERSION = CLAUDE_CODE_VERSION
DEFAULT_EXECUTABLE = "claude"
OUTPUT_FORMATS = ("stream-json", "json")
# Authentication variables Claude Code reads; with a credential file, only the file's count.
AUTH_VARIABLES = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN")
_VERSION = re.compile(r"^(\d+\.\d+\.\d+) \(Claude Code\)\s*$")
_USAGE_KEYS = (
    "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
)  # fmt: skip
_FAILED_SUBTYPES = {
    "error_max_turns": "the agent reached its maximum number of turns",
    "error_max_budget_usd": "the agent reached its maximum budget",
    "error_during_execution": "the agent failed while running",
    "error_max_structured_output_retries": "the agent could not produce its structured output",
}


def claude_version(
    executable: str = DEFAULT_EXECUTABLE, *, env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> str:  # fmt: skip
    """The version `claude --version` reports (`9.8.7 (Claude Code)` gives `9.8.7`)."""
    try:
        done = subprocess.run(
            [executable, "--version"],
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise UnavailableError(f"Claude Code is not installed: {executable!r} not found") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnavailableError(f"`{executable} --version` failed: {exc}") from exc
    first = (done.stdout.strip().splitlines() or [""])[0]
    found = _VERSION.match(first)
    if done.returncode != 0 or found is None:
        raise UnavailableError(
            f"`{executable} --version` answered {excerpt(done.stdout + done.stderr, 120)!r} "
            f"(exit {done.returncode}), not '<version> (Claude Code)'"
        )
    return found.group(1)


def check_claude_version(
    expected: str = PINNED_VERSION, executable: str = DEFAULT_EXECUTABLE,
    *, env: Mapping[str, str] | None = None,
) -> str:  # fmt: skip
    """The installed version, or UnavailableError saying why the worker must refuse work."""
    found = claude_version(executable, env=env)
    if found != expected:
        raise UnavailableError(
            f"Claude Code {found} is installed; this worker is pinned to {expected}"
        )
    return found


def build_argv(executable: str, request: AgentRequest, output_format: str) -> list[str]:
    """The command line: flags only. The prompt is never part of it."""
    options = request.options
    argv = [executable, "-p", "--output-format", output_format]
    if output_format == "stream-json":
        argv.append("--verbose")  # `-p` refuses stream-json without it
    if options.model:
        argv += ["--model", options.model]
    if options.permission_mode:
        argv += ["--permission-mode", options.permission_mode]
    if options.allowed_tools:
        argv += ["--allowedTools", ",".join(options.allowed_tools)]
    if options.max_turns is not None:
        argv += ["--max-turns", str(int(options.max_turns))]
    if options.max_budget_usd is not None:
        argv += ["--max-budget-usd", repr(float(options.max_budget_usd))]
    if resuming(request):
        argv += ["--resume", str(request.resume_session)]
    return argv


@dataclass
class StreamReader:
    """Follows Claude Code's output line by line (stream-json events or one json result)."""

    result: dict[str, Any] | None = None
    session_id: str | None = None
    events: int = 0
    other_lines: int = 0
    first_other: str | None = None
    other_tail: list[str] = field(default_factory=list)  # the last lines that were not events
    rate_limited_event: bool = False
    rate_limit_resets: list[float] = field(default_factory=list)
    assistant_errors: list[str] = field(default_factory=list)

    def feed(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        event = json_event(text)
        if event is None:
            self.other_lines += 1
            if self.first_other is None:
                self.first_other = text[:300]
            self.other_tail = [*self.other_tail[-19:], text[:2000]]
            return
        self.events += 1
        kind = event["type"]
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        if kind == "result":
            self.result = event
        elif kind == "assistant" and isinstance(event.get("error"), str):
            self.assistant_errors.append(event["error"])
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info")
            if isinstance(info, dict):
                resets = info.get("resetsAt")
                if info.get("status") == "rejected":
                    self.rate_limited_event = True
                    if isinstance(resets, int | float):
                        self.rate_limit_resets.append(float(resets))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def output_format(request: AgentRequest) -> str:
    """The spec's `output_format`, stream-json unless it says json; UsageError otherwise."""
    chosen = str(request.options.extra.get("output_format") or "stream-json")
    if chosen not in OUTPUT_FORMATS:
        raise UsageError(
            f"claude-code output_format must be one of {', '.join(OUTPUT_FORMATS)}, not {chosen!r}"
        )
    return chosen


CLAUDE_CODE = Launch(
    name=NAME,
    title="Claude Code",
    executable=DEFAULT_EXECUTABLE,
    auth_variables=AUTH_VARIABLES,
    argv=lambda executable, request: build_argv(executable, request, output_format(request)),
    # The worker pins the version; an agent that updates itself would break the pin.
    env={"DISABLE_AUTOUPDATER": "1"},
)


class ClaudeCodeBackend:
    """`claude -p` in the checkout; see the module docstring. It has been seen to hang
    after its result event (MCP servers, background shells) with its work already done:
    the result is its last word, and it is then ended after `exit_grace_s`."""

    name = NAME

    def run(self, request: AgentRequest) -> AgentResult:
        output_format(request)  # a bad one is refused before anything runs
        reader = StreamReader()
        ended = start(CLAUDE_CODE, request, reader.feed, lambda: reader.result is not None)
        if isinstance(ended, AgentResult):
            return ended
        return judge(request, reader, ended)


def _rate_limit_reset(reader: StreamReader, texts: list[str]) -> float | None:
    if reader.rate_limit_resets:
        return reader.rate_limit_resets[-1]
    for text in texts:
        if (when := reset_epoch(text)) is not None:
            return when
    return None


def _result_fields(
    result: Mapping[str, Any], reader: StreamReader, redact: Redactor
) -> dict[str, Any]:
    """What the result event says about the run, with every type checked."""
    text = result.get("result")
    usage = result.get("usage")
    denials = result.get("permission_denials")
    session = result.get("session_id")
    subtype = result.get("subtype")
    return {
        "cost_usd": _number(result.get("total_cost_usd", result.get("cost_usd"))),
        "usage": {
            key: count for key in _USAGE_KEYS
            if isinstance(usage, dict) and (count := _integer(usage.get(key))) is not None
        },
        "num_turns": _integer(result.get("num_turns")),
        "session_id": session if isinstance(session, str) else reader.session_id,
        "duration_ms": _integer(result.get("duration_ms")),
        "permission_denials": tuple(d for d in denials if isinstance(d, dict))
        if isinstance(denials, list) else (),
        "subtype": subtype if isinstance(subtype, str) else None,
        "result_text": redact(text[:RESULT_TEXT_LIMIT]) if isinstance(text, str) and text
        else None,
    }  # fmt: skip


def _is_rate_limited(reader: StreamReader, outcome: ProcessOutcome, text: str) -> bool:
    result = reader.result or {}
    is_error = result.get("is_error") is True
    if (
        (reader.rate_limited_event and (is_error or not text.strip()))
        or result.get("api_error_status") == 429
        or "rate_limit" in reader.assistant_errors
    ):
        return True
    if reader.result is not None:
        # A success that merely mentions rate limits (a summary of work on them) is not one.
        return (is_error and looks_rate_limited(text)) or starts_rate_limited(text)
    # Only what is not an event: an event may quote the agent's own work on rate limits.
    return any(looks_rate_limited(line) for line in reader.other_tail) or looks_rate_limited(
        outcome.stderr_tail
    )


def _no_result_reason(reader: StreamReader, outcome: ProcessOutcome) -> str:
    said = outcome.stderr_tail.strip()
    if reader.events == 0 and reader.other_lines == 0:
        if said:
            return f"Claude Code printed no result (exit {outcome.exit_code}): {excerpt(said)}"
        return f"Claude Code printed nothing (exit {outcome.exit_code})"
    reason = f"Claude Code ended (exit {outcome.exit_code}) without a result event"
    if reader.other_lines:
        return (
            f"{reason}; {reader.other_lines} line(s) of its output are not JSON: "
            f"{excerpt(reader.first_other or '')}"
        )
    return reason + (f": {excerpt(said)}" if said else f" after {reader.events} event(s)")


def _error_reason(result: Mapping[str, Any], subtype: str | None, text: str) -> str:
    # An error result can carry the subtype "success": saying so would read as a contradiction.
    named = f" ({subtype})" if subtype and subtype != "success" else ""
    why = _FAILED_SUBTYPES.get(subtype or "", f"Claude Code reported an error{named}")
    details = result.get("errors")
    if isinstance(details, list) and details:
        return why + ": " + excerpt("; ".join(str(d) for d in details), 200)
    if "not logged in" in text.lower():
        return (
            f"{why}: {excerpt(text, 200)}: give the worker a credential "
            f"({' or '.join(AUTH_VARIABLES[:2])} in its credential file) or run `claude /login` "
            "as its user"
        )
    return why + (": " + excerpt(text, 200) if text else "")


def judge(request: AgentRequest, reader: StreamReader, ended: Ended) -> AgentResult:
    """The result of a Claude Code run from how its process ended and what it printed."""
    outcome, redact = ended.outcome, ended.redact
    result = reader.result or {}
    text = result["result"] if isinstance(result.get("result"), str) else ""
    fields = _result_fields(result, reader, redact)
    common: dict[str, Any] = {
        "backend": NAME, "log_path": request.log_path, "exit_code": outcome.exit_code, **fields,
    }  # fmt: skip

    # A limit notice wins over everything but a cancel: the phase should wait, not fail.
    if not outcome.cancelled and _is_rate_limited(reader, outcome, text):
        said = text or "\n".join(reader.other_tail) or outcome.stderr_tail
        return AgentResult(
            status="rate_limited",
            reason="usage limit reached: " + excerpt(redact(said), 200),
            rate_limit_reset=_rate_limit_reset(
                reader, [text, *reader.other_tail, outcome.stderr_tail]
            ),
            **common,
        )
    # A result that arrived in time stands even if the process then hung and was ended.
    stopped = watchdog_result(NAME, request, outcome, **fields)
    if stopped is not None and (reader.result is None or outcome.cancelled):
        return stopped
    if reader.result is None:
        return AgentResult(
            status="failed", reason=redact(_no_result_reason(reader, outcome)), **common
        )
    subtype = fields["subtype"]
    if result.get("is_error") is True or subtype != "success":
        return AgentResult(
            status="failed", reason=redact(_error_reason(result, subtype, text)), **common
        )

    warnings: list[str] = []
    if outcome.lingered or outcome.ended_by_watchdog:
        warnings.append("Claude Code did not exit after its result and was ended")
    elif outcome.exit_code != 0:
        warnings.append(f"Claude Code exited {outcome.exit_code} despite a success result")
    if denials := fields["permission_denials"]:
        names = sorted({str(d.get("tool_name", "?")) for d in denials})
        warnings.append(f"{len(denials)} tool use(s) were denied: {', '.join(names)}")
    return finished_result(request, text, warnings, require_marker=ended.require_marker, **common)
