"""Stubs of the vendors' model APIs on loopback, for running the real agent CLIs with no model.

`codex` speaks the OpenAI Responses API (SSE), `gemini` the Gemini API's
`streamGenerateContent` (SSE), `chat` the OpenAI-compatible Chat Completions stream
(`/v1/chat/completions`, SSE chunks then `[DONE]`) that opencode's openai-compatible
provider reads. Each answer ends with the completion marker the prompt
asked for (read from the request), with fixed token counts; `limited=True` answers with
the vendor's rate-limit error instead. What the CLIs printed against these stubs is in
tests/fixtures/agents.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARKER = re.compile(rb"SUPERAGENT-PHASE-DONE [A-Za-z0-9._-]+")
RESET_EPOCH = 1900000000


def _answer(body: bytes) -> str:
    found = MARKER.search(body)
    return "Done." + ("\n" + found.group(0).decode() if found else "")


class _Handler(BaseHTTPRequestHandler):
    vendor = ""
    limited = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _sse(self, events: list[tuple[str | None, Any]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.vendor == "openai":
            self._openai(body)
        elif self.vendor == "chat":
            self._chat(body)
        else:
            self._gemini(body)

    def _openai(self, body: bytes) -> None:
        if self.limited:
            error = {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                     "plan_type": "plus", "resets_at": RESET_EPOCH}  # fmt: skip
            self._json(429, {"error": error})
            return
        item = {"type": "message", "role": "assistant", "id": "msg_1",
                "content": [{"type": "output_text", "text": _answer(body)}]}  # fmt: skip
        usage = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200},
                 "output_tokens": 300, "total_tokens": 1500}  # fmt: skip
        self._sse([
            ("response.created", {"type": "response.created", "response": {"id": "resp_1"}}),
            ("response.output_item.done",
             {"type": "response.output_item.done", "output_index": 0, "item": item}),
            ("response.completed",
             {"type": "response.completed", "response": {"id": "resp_1", "usage": usage}}),
        ])  # fmt: skip

    def _chat(self, body: bytes) -> None:
        if self.limited:
            error = {"message": "Rate limit reached for requests", "type": "requests",
                     "code": "rate_limit_exceeded"}  # fmt: skip
            self._json(429, {"error": error})
            return
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": RESET_EPOCH,
                "model": "stub-model"}  # fmt: skip
        usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                 "prompt_tokens_details": {"cached_tokens": 200}}  # fmt: skip
        delta = {"role": "assistant", "content": _answer(body)}
        self._sse([
            (None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}),
            (None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            (None, {**base, "choices": [], "usage": usage}),
        ])  # fmt: skip
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _gemini(self, body: bytes) -> None:
        if self.limited:
            quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}  # fmt: skip
            self._json(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                       "message": "Resource has been exhausted",
                                       "details": [quota]}})  # fmt: skip
            return
        chunk = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": _answer(body)}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 300,
                              "totalTokenCount": 1500, "cachedContentTokenCount": 200},
        }  # fmt: skip
        self._sse([(None, chunk)])


@contextmanager
def serving(vendor: str, *, limited: bool = False) -> Iterator[str]:
    """A stub of `vendor` ("openai", "chat" or "gemini") on a free loopback port; yields its URL."""
    handler = type("Handler", (_Handler,), {"vendor": vendor, "limited": limited})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
