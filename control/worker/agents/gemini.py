"""The gemini backend: `gemini -p ... --output-format stream-json` headless (Google's Gemini CLI).

Its JSONL events (packages/core/src/output/types.ts, checked against recordings of the
pinned release): `init` {session_id, model}, `message` {role, content, delta},
`tool_use`, `tool_result`, `error` {severity, message}, and `result` {status: success |
error, error: {type, message}, stats: {input_tokens, output_tokens, cached, ...}}, its
last word. Documented exit codes: 0 success, 1 error, 41 authentication, 42 input, 52
configuration, 53 turn limit, 130 cancelled. The task goes on stdin (the CLI appends
`-p`'s short text to it); `--approval-mode yolo` asks nobody, `--skip-trust` keeps it
from falling back to asking in an untrusted checkout. Tokens only: cost estimated.
"""

from __future__ import annotations

from typing import Any

from control.worker.agents.base import AgentRequest, resuming
from control.worker.agents.headless import Cli, JsonReader, count, flags, obj

NAME = "gemini"
AUTH_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI")
# The -p text: fixed, so no task text is ever on the command line.
PROMPT_FLAG_TEXT = "Carry out the task given above on stdin."
EXIT_REASONS = {
    41: "authentication failed: give the worker GEMINI_API_KEY in the account's credential file",
    42: "it refused its input",
    52: "its configuration is invalid",
    53: "it reached its turn limit",
    130: "it was cancelled",
}
_QUOTA_WORDS = ("exhausted your daily quota", "quota exceeded", "resource_exhausted", "429")


def build_argv(executable: str, request: AgentRequest) -> list[str]:
    argv = [executable, "-p", PROMPT_FLAG_TEXT, "--output-format", "stream-json"]
    argv += ["--approval-mode", "yolo", "--skip-trust"]
    if resuming(request):  # `--resume <session uuid>`: that session of this checkout
        argv += ["--resume", str(request.resume_session)]
    return argv + flags([("--model", request.options.model)])


class GeminiReader(JsonReader):
    def __init__(self, request: AgentRequest) -> None:
        super().__init__(request)
        self._text: list[str] = []

    def event(self, kind: str, event: dict[str, Any]) -> None:
        reading = self.reading
        if kind == "init":
            if isinstance(event.get("session_id"), str):
                reading.session_id = event["session_id"]
            if isinstance(event.get("model"), str):
                reading.model = reading.model or event["model"]
        elif kind == "message" and event.get("role") == "assistant":
            content = event.get("content")
            if isinstance(content, str):
                self._text = [*self._text, content] if event.get("delta") else [content]
                reading.final_text = "".join(self._text)
        elif kind in ("tool_use", "tool_result"):
            self._text = []  # the answer is what it says after its last tool
        elif kind == "error":
            reading.note_error(str(event.get("message") or ""))
        elif kind == "result":
            self._result(event)

    def _result(self, event: dict[str, object]) -> None:
        reading = self.reading
        stats = obj(event.get("stats"))
        reading.input_tokens = count(stats.get("input_tokens"))
        reading.cached_input_tokens = count(stats.get("cached"))
        reading.output_tokens = count(stats.get("output_tokens"))
        if event.get("status") == "success":
            reading.done = True
            return
        error = obj(event.get("error"))
        reading.fail(str(error.get("message") or "the run failed"), limit_words=_QUOTA_WORDS)


GEMINI = Cli(
    name=NAME,
    title="Gemini CLI",
    executable="gemini",
    auth_variables=AUTH_VARIABLES,
    argv=build_argv,
    reader=GeminiReader,
    exit_reasons=EXIT_REASONS,
)
