"""The codex backend: `codex exec --json` headless in the checkout (OpenAI's Codex CLI).

Its JSONL events (codex-rs/exec/src/exec_events.rs, checked against recordings of the
pinned release): `thread.started` {thread_id}, `turn.started`, `item.started|updated|
completed` {item: {id, type, ...}}, `turn.completed` {usage: {input_tokens,
cached_input_tokens, output_tokens, ...}}, `turn.failed` {error: {message}}, and `error`
{message} (also its retries: "Reconnecting... 2/5"). A turn.completed is its last word;
the final `agent_message` item is the agent's answer. It reports tokens, not money.
`exec` asks nobody for approval (`approval_policy="never"`); its own sandbox is
`workspace-write` unless the spec says otherwise. A session resumes by thread id.
"""

from __future__ import annotations

from typing import Any

from control.worker.agents.base import AgentRequest, resuming
from control.worker.agents.headless import Cli, JsonReader, count, flags, obj

NAME = "codex"
SANDBOX_MODES = ("read-only", "workspace-write", "danger-full-access")
AUTH_VARIABLES = ("CODEX_API_KEY", "OPENAI_API_KEY")


def build_argv(executable: str, request: AgentRequest) -> list[str]:
    """`codex exec` with flags only: the prompt is `-`, read from stdin."""
    extra = request.options.extra
    sandbox = str(extra.get("sandbox") or "workspace-write")
    if sandbox not in SANDBOX_MODES:
        sandbox = "workspace-write"  # the spec's schema refuses others; be safe anyway
    argv = [executable, "exec", "--json", "--color", "never"]
    argv += ["--sandbox", sandbox, "-c", 'approval_policy="never"']
    argv += flags([("--model", request.options.model)])
    if resuming(request):  # `exec resume <thread id> -`: the rest of the turn on stdin
        argv += ["resume", str(request.resume_session)]
    return [*argv, "-"]


class CodexReader(JsonReader):
    def event(self, kind: str, event: dict[str, Any]) -> None:
        reading = self.reading
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            reading.session_id = event["thread_id"]
        elif kind == "turn.completed":
            usage = obj(event.get("usage"))
            reading.input_tokens += count(usage.get("input_tokens"))
            reading.cached_input_tokens += count(usage.get("cached_input_tokens"))
            reading.output_tokens += count(usage.get("output_tokens"))
            reading.done = True
        elif kind == "turn.failed":
            error = obj(event.get("error"))
            reading.fail(str(error.get("message") or "the turn failed"))
        elif kind == "error":
            reading.note_error(str(event.get("message") or ""))
        elif kind == "item.completed":
            item = obj(event.get("item"))
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                reading.final_text = item["text"]


CODEX = Cli(
    name=NAME,
    title="Codex",
    executable="codex",
    auth_variables=AUTH_VARIABLES,
    argv=build_argv,
    reader=CodexReader,
    exit_reasons={2: "it refused its command line"},
)
