"""What the agent CLIs share: start, read, judge.

Each CLI runs headless in the checkout with the prompt on stdin (then closed), its
credentials in its environment (never argv), no question asked of anyone: `start` does
that for every CLI, Claude Code's too. A feedback round whose session lives here resumes
it (each module's argv says how) and is told only what failed.

The JSON-streaming ones (codex, gemini, opencode) share the rest: a module of each says
its flags (`Cli`) and reads its events into a `Reading` (a `JsonReader`). The verdict is
the same for all, and never the exit code alone: the final event decides, a limit notice
makes the phase wait, the completion marker proves the agent saw the prompt. A CLI that
says only tokens gets a cost from the price table, marked estimated.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from control.errors import SuperagentError
from control.process import ProcessOutcome, Redactor, run_watched
from control.worker.agents.base import (
    RESULT_TEXT_LIMIT,
    AgentRequest,
    AgentResult,
    child_environment,
    excerpt,
    finished_result,
    resuming,
    watchdog_result,
)
from control.worker.agents.prices import estimate_usd
from control.worker.agents.ratelimit import looks_rate_limited, reset_epoch

# How long a CLI may go on after its last word (or a limit notice) before it is ended.
DEFAULT_EXIT_GRACE_S = 15.0


@dataclass
class Reading:
    """What a CLI's output said, filled line by line by its reader."""

    session_id: str | None = None
    model: str | None = None
    final_text: str = ""
    input_tokens: int = 0  # cached ones included
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # only when the CLI itself says it
    done: bool = False  # the CLI's final event of a finished run
    failed: str | None = None  # the CLI's final event of a failed run: its message
    rate_limited: bool = False
    rate_limit_reset: float | None = None
    events: int = 0
    other_lines: int = 0
    first_other: str | None = None
    errors: list[str] = field(default_factory=list)  # non-final error messages, last ones

    @property
    def said_last_word(self) -> bool:
        return self.done or self.failed is not None or self.rate_limited

    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
        }

    def note_other(self, text: str) -> None:
        self.other_lines += 1
        if self.first_other is None:
            self.first_other = text[:300]

    def note_error(self, message: str) -> None:
        self.errors = [*self.errors[-9:], message[:2000]]

    def fail(self, message: str, *, limit_words: Sequence[str] = ()) -> None:
        """The CLI's final word is a failure: a limit notice (or one of `limit_words`, in
        any case) makes it a rate limit, with the reset time the message gives."""
        self.failed = message
        lowered = message.lower()
        if looks_rate_limited(message) or any(w in lowered for w in limit_words):
            self.rate_limited = True
            self.rate_limit_reset = reset_epoch(message)


class Reader(Protocol):
    reading: Reading

    def feed(self, line: str) -> None: ...


class JsonReader:
    """The reading loop every JSON-streaming CLI shares: a line that is one of its events
    is counted and handed to `event`, any other non-empty line to `other`."""

    def __init__(self, request: AgentRequest) -> None:
        self.reading = Reading(model=request.options.model)

    def feed(self, line: str) -> None:
        event = json_event(line)
        if event is None:
            text = line.strip()
            if text:
                self.other(text)
            return
        self.reading.events += 1
        self.event(event["type"], event)

    def other(self, text: str) -> None:
        self.reading.note_other(text)

    def event(self, kind: str, event: dict[str, Any]) -> None:
        raise NotImplementedError


def json_event(line: str) -> dict[str, Any] | None:
    """The line as a JSON object with a string `type`, or None."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: events are read defensively."""
    return value if isinstance(value, dict) else {}


def count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@dataclass(frozen=True, kw_only=True)
class Launch:
    """How an agent CLI is started, whatever then reads its output (`start`)."""

    name: str  # the backend's name
    title: str  # how to call it in a reason: "Codex"
    executable: str
    auth_variables: tuple[str, ...]
    argv: Callable[[str, AgentRequest], list[str]]
    merge_stderr: bool = False  # its warnings and limit notices are log lines on stderr
    env: Mapping[str, str] = field(default_factory=dict)  # set unless the worker sets it


@dataclass(frozen=True, kw_only=True)
class Cli(Launch):
    """A JSON-streaming CLI: how it starts, its reader, and what its exit codes mean."""

    reader: Callable[[AgentRequest], Reader]
    exit_reasons: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ended:
    """A CLI run that ended, with what judging it needs."""

    outcome: ProcessOutcome
    redact: Redactor  # masks the credentials it was given
    require_marker: bool  # the completion marker must end its answer


def start(
    launch: Launch,
    request: AgentRequest,
    on_line: Callable[[str], None],
    finished: Callable[[], bool],
) -> Ended | AgentResult:
    """Run the CLI for `request` to its end under the process supervisor: `on_line` reads
    its output, `finished` says it gave its last word (it is then given `exit_grace_s`
    to exit). A failed result instead when it cannot start: no credential, not installed."""
    extra = request.options.extra
    executable = str(extra.get("executable") or launch.executable)
    try:
        env, secrets = child_environment(request, drop=launch.auth_variables)
    except SuperagentError as exc:
        return AgentResult(
            status="failed", reason=str(exc), backend=launch.name, log_path=request.log_path
        )
    for name, value in launch.env.items():
        env.setdefault(name, value)
    resolved = shutil.which(executable, path=env.get("PATH"))
    if resolved is None:
        return AgentResult(
            status="failed", backend=launch.name, log_path=request.log_path,
            reason=f"{launch.title} is not installed: {executable!r} not found on the "
            "agent's PATH",
        )  # fmt: skip
    argv = launch.argv(resolved, request)
    outcome = run_watched(
        argv,
        cwd=request.checkout,
        env=env,
        log_path=request.log_path,
        stdin_data=request.prompt(resuming=resuming(request)).encode("utf-8"),
        wall_timeout_s=request.wall_timeout_s,
        silence_timeout_s=request.silence_timeout_s,
        cancel=request.cancel,
        secrets=secrets,
        wrap=request.wrap,
        on_stdout_line=on_line,
        kill_grace_s=request.kill_grace_s,
        finished=finished,
        linger_s=float(extra.get("exit_grace_s", DEFAULT_EXIT_GRACE_S)),
        merge_stderr=launch.merge_stderr,
        log_header=[
            f"backend {launch.name}, phase {request.phase_id}",
            f"argv {json.dumps(argv)}",
            f"cwd {request.checkout}",
            "prompt on stdin; credentials in the environment: "
            + (", ".join(sorted(n for n in launch.auth_variables if n in env)) or "none"),
        ],
    )
    require_marker = bool(extra.get("require_completion_marker", True))
    return Ended(outcome, Redactor(secrets), require_marker)


class CliBackend:
    """The backend of a JSON-streaming CLI: `start` it, read it, `judge` it."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.name = cli.name

    def run(self, request: AgentRequest) -> AgentResult:
        reader = self.cli.reader(request)
        ended = start(self.cli, request, reader.feed, lambda: reader.reading.said_last_word)
        if isinstance(ended, AgentResult):
            return ended
        return judge(
            self.cli, request, ended.outcome, reader.reading,
            require_marker=ended.require_marker, redact=ended.redact,
        )  # fmt: skip


def _cost(request: AgentRequest, reading: Reading) -> tuple[float | None, bool]:
    if reading.cost_usd is not None:
        return reading.cost_usd, False
    estimate = estimate_usd(
        request.options.model or reading.model,
        input_tokens=reading.input_tokens,
        cached_input_tokens=reading.cached_input_tokens,
        output_tokens=reading.output_tokens,
    )
    return estimate, estimate is not None


def _no_final_event(cli: Cli, outcome: ProcessOutcome, reading: Reading) -> str:
    said = (outcome.stderr_tail or "").strip()
    why = cli.exit_reasons.get(outcome.exit_code or 0) if outcome.exit_code else None
    reason = f"{cli.title} ended (exit {outcome.exit_code}) without its final event"
    if why:
        reason += f" ({why})"
    if reading.errors:
        return f"{reason}: {excerpt(reading.errors[-1], 200)}"
    if said:
        return f"{reason}: {excerpt(said, 200)}"
    if reading.other_lines:
        return f"{reason}; {reading.other_lines} line(s) are not its events: " + excerpt(
            reading.first_other or ""
        )
    return reason + f" after {reading.events} event(s)"


def judge(
    cli: Cli,
    request: AgentRequest,
    outcome: ProcessOutcome,
    reading: Reading,
    *,
    require_marker: bool = True,
    redact: Redactor | None = None,
) -> AgentResult:
    """The result of a CLI run from how its process ended and what it printed."""
    redact = redact or Redactor()
    cost, estimated = _cost(request, reading)
    text = reading.final_text
    common: dict[str, Any] = {
        "backend": cli.name,
        "log_path": request.log_path,
        "exit_code": outcome.exit_code,
        "session_id": reading.session_id,
        "usage": reading.usage(),
        "cost_usd": cost,
        "cost_estimated": estimated,
        "result_text": redact(text[:RESULT_TEXT_LIMIT]) if text else None,
    }
    if reading.rate_limited and not outcome.cancelled:
        said = reading.failed or (reading.errors[-1] if reading.errors else "")
        return AgentResult(
            status="rate_limited",
            reason="usage limit reached: " + excerpt(redact(said), 200),
            rate_limit_reset=reading.rate_limit_reset,
            **common,
        )
    ended = watchdog_result(cli.name, request, outcome, **_fields(common))
    if ended is not None and (not reading.said_last_word or outcome.cancelled):
        return ended
    if reading.failed is not None:
        return AgentResult(
            status="failed",
            reason=redact(f"{cli.title} reported an error: {excerpt(reading.failed, 300)}"),
            **common,
        )
    if not reading.done:
        return AgentResult(
            status="failed", reason=redact(_no_final_event(cli, outcome, reading)), **common
        )
    warnings: list[str] = []
    if outcome.lingered or outcome.ended_by_watchdog:
        warnings.append(f"{cli.title} did not exit after its final event and was ended")
    elif outcome.exit_code != 0:
        warnings.append(f"{cli.title} exited {outcome.exit_code} despite finishing")
    return finished_result(request, text, warnings, require_marker=require_marker, **common)


def _fields(common: Mapping[str, Any]) -> dict[str, Any]:
    """`common` less what `watchdog_result` sets itself."""
    return {k: v for k, v in common.items() if k not in ("backend", "log_path", "exit_code")}


def flags(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    """`--flag value` for each pair whose value is set."""
    out: list[str] = []
    for flag, value in pairs:
        if value not in (None, ""):
            out += [flag, str(value)]
    return out
