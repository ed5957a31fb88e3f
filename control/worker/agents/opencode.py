"""The opencode backend: `opencode run --format json` headless (sst's opencode).

Its JSON events (one per line, checked against recordings of the pinned release):
`step_start`, `text` {part: {text}}, `tool_use`, `step_finish` {part: {reason, tokens:
{input, output, reasoning, cache: {read, write}}, cost}} and `error`, each with its
`sessionID`. The message is read from stdin. `--auto` approves what is not explicitly
denied, so nobody is asked. It retries a rate limit in silence, saying so only in its
log (`--print-logs`, on stderr, read here interleaved): the first such notice ends the
run as rate-limited instead of waiting out its retries. It reports money itself.
"""

from __future__ import annotations

from typing import Any

from control.worker.agents.base import AgentRequest, resuming
from control.worker.agents.headless import Cli, JsonReader, count, flags, obj
from control.worker.agents.ratelimit import looks_rate_limited, reset_epoch

NAME = "opencode"
AUTH_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY")
_FINISHED = ("stop", "end-turn", "end_turn", "length")


def build_argv(executable: str, request: AgentRequest) -> list[str]:
    argv = [executable, "run", "--format", "json", "--auto", "--print-logs"]
    argv += ["--log-level", "WARN"]
    argv += flags([("--model", request.options.model)])
    if resuming(request):  # `run --session <id>`: continues that session
        argv += ["--session", str(request.resume_session)]
    return argv


class OpencodeReader(JsonReader):
    def other(self, text: str) -> None:
        reading = self.reading
        reading.note_other(text)
        if 'message="stream error"' in text and looks_rate_limited(text):
            reading.note_error(text)
            reading.rate_limited = True
            reading.rate_limit_reset = reset_epoch(text)

    def event(self, kind: str, event: dict[str, Any]) -> None:
        reading = self.reading
        if isinstance(event.get("sessionID"), str):
            reading.session_id = event["sessionID"]
        part = obj(event.get("part"))
        if kind == "text" and isinstance(part.get("text"), str):
            reading.final_text = part["text"]
        elif kind == "step_finish":
            self._step(part)
        elif kind == "error":
            error = event.get("error")
            message = _message(error) or "opencode reported an error"
            reading.failed = message
            if looks_rate_limited(message):
                reading.rate_limited = True

    def _step(self, part: dict[str, Any]) -> None:
        reading = self.reading
        tokens = obj(part.get("tokens"))
        cache = obj(tokens.get("cache"))
        cached = count(cache.get("read"))
        reading.input_tokens += count(tokens.get("input")) + cached
        reading.cached_input_tokens += cached
        reading.output_tokens += count(tokens.get("output")) + count(tokens.get("reasoning"))
        cost = part.get("cost")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0:
            reading.cost_usd = (reading.cost_usd or 0.0) + float(cost)
        reading.done = part.get("reason") in _FINISHED


def _message(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data")
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
        return str(error.get("message") or error.get("name") or "")
    return str(error or "")


OPENCODE = Cli(
    name=NAME,
    title="opencode",
    executable="opencode",
    auth_variables=AUTH_VARIABLES,
    argv=build_argv,
    reader=OpencodeReader,
    merge_stderr=True,
)
