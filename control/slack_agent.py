"""`control slack`: the Slack agent, a long-lived process answering allow-listed people in
a channel where it is mentioned or in a direct message, in the thread that asked.

It connects with Socket Mode (an outbound WebSocket: no open port), or, when asked,
takes Slack's HTTP requests, each verified with the signing secret and its timestamp
by slack_bolt, and an exact replay within the timestamp's window refused here. What
the commands do is `control.slack_commands`; this module is the slack_bolt wiring:
events and button clicks in, messages out, and the thread that posts answers to
free-form tasks when they come.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from control.errors import UsageError
from control.inventory import Worker
from control.slack_commands import Commands, Reply
from control.slack_config import AgentConfig

log = logging.getLogger("superagent.slack")
CONFIRM, ABORT = "command-confirm", "command-abort"
REPLAY_WINDOW_S = 300.0  # slack_bolt refuses older timestamps; a repeat within is refused here


def confirmation_blocks(reply: Reply) -> list[dict[str, Any]]:
    """The question and its two buttons; the buttons carry only the pending command's
    token, never the command."""
    assert reply.token is not None
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": reply.text}},
        {
            "type": "actions",
            "block_id": f"confirm-{reply.token[:16]}",
            "elements": [
                {"type": "button", "action_id": CONFIRM, "value": reply.token, "style": "danger",
                 "text": {"type": "plain_text", "text": "Confirm"}},
                {"type": "button", "action_id": ABORT, "value": reply.token,
                 "text": {"type": "plain_text", "text": "Cancel"}},
            ],
        },
    ]  # fmt: skip


def delivery_key(body: Mapping[str, Any]) -> str | None:
    """What names one delivery across Slack's retries: an event's `event_id` (the same in
    every retry, over HTTP or Socket Mode), a click's `action_ts` with its `trigger_id`
    (a new click has new ones). None for what is not acted on (url_verification...)."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("type") == "block_actions":
        actions = body.get("actions") or [{}]
        stamp = actions[0].get("action_ts") if isinstance(actions[0], Mapping) else None
        if stamp and body.get("trigger_id"):
            return f"action:{stamp}:{body['trigger_id']}"
    return None


def notify_ready() -> bool:
    """Tell systemd (Type=notify) that the agent is up: connected, or listening. Nothing
    when not started by systemd. Returns whether it was told."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(b"READY=1")
    return True


class Agent:
    """The slack_bolt app with the commands behind it; `start_socket_mode()` or
    `serve_http()`, then `close()`."""

    def __init__(
        self,
        config: AgentConfig,
        state: Path,
        inventory: Path | None = None,
        workers: Sequence[Worker] = (),
        answer_poll_s: float = 5.0,
    ) -> None:
        from slack_bolt import App  # noqa: PLC0415 - only `control slack` loads Slack
        from slack_sdk import WebClient  # noqa: PLC0415

        self.config = config
        options: dict[str, Any] = {"token": config.bot_token.value("slack agent bot token")}
        if config.base_url:
            options["base_url"] = config.base_url
        self.client = WebClient(**options)
        self.commands = Commands(config, state, inventory, workers, post=self.post)
        self.answer_poll_s = answer_poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closers: list[Callable[[], None]] = []
        self._seen: dict[str, float] = {}
        self._seen_lock = threading.Lock()
        signing = config.signing_secret
        self.app = App(
            client=self.client,
            signing_secret=signing.value("slack agent signing secret") if signing else None,
        )
        self._guard()
        self._wire()

    # -- out ------------------------------------------------------------------------------

    def post(self, channel: str, thread: str, text: str) -> None:
        self.client.chat_postMessage(channel=channel, thread_ts=thread, text=text)

    # -- in -------------------------------------------------------------------------------

    def _wire(self) -> None:
        app = self.app

        def message(event: Mapping[str, Any], say: Callable[..., Any]) -> None:
            user, channel = str(event.get("user") or ""), str(event.get("channel") or "")
            thread = str(event.get("thread_ts") or event.get("ts") or "")
            reply = self.commands.handle(user, channel, thread, str(event.get("text") or ""))
            if reply.token is not None:
                say(text=reply.text, blocks=confirmation_blocks(reply), thread_ts=thread)
            else:
                say(text=reply.text, thread_ts=thread)

        @app.event("app_mention")
        def _mention(event: dict[str, Any], say: Callable[..., Any]) -> None:
            message(event, say)

        @app.event("message")
        def _direct(event: dict[str, Any], say: Callable[..., Any]) -> None:
            direct = event.get("channel_type") == "im"
            if direct and not event.get("bot_id") and not event.get("subtype"):
                message(event, say)

        def click(body: Mapping[str, Any], confirmed: bool) -> None:
            user = str((body.get("user") or {}).get("id") or "")
            container = body.get("container") or {}
            channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id"))
            prompt = str(container.get("message_ts") or "")
            message = body.get("message") or {}
            thread = str(message.get("thread_ts") or prompt)
            token = str(((body.get("actions") or [{}])[0]).get("value") or "")
            reply = self.commands.decide(user, channel, token, confirmed)
            if reply.outcome in ("done", "aborted", "failed"):
                # The question loses its buttons: a decided command cannot be clicked again.
                verb = "confirmed" if confirmed else "cancelled"
                self.client.chat_update(
                    channel=channel, ts=prompt, blocks=[],
                    text=f"{message.get('text') or ''!s}\n{verb} by <@{user}>",
                )  # fmt: skip
            self.post(channel, thread, reply.text)

        @app.action(CONFIRM)
        def _confirm(ack: Callable[[], Any], body: dict[str, Any]) -> None:
            ack()
            click(body, True)

        @app.action(ABORT)
        def _abort(ack: Callable[[], Any], body: dict[str, Any]) -> None:
            ack()
            click(body, False)

    def _guard(self) -> None:
        """Before any listener: an exact replay (HTTP mode) refused, a repeated delivery
        acknowledged and dropped."""
        app = self.app

        @app.middleware
        def _no_replay(req: Any, resp: Any, next: Callable[[], Any]) -> Any:
            signature = (req.headers.get("x-slack-signature") or [""])[0]
            if req.mode != "http" or not signature:
                return next()
            now = time.monotonic()
            with self._seen_lock:
                for seen, at in list(self._seen.items()):
                    if now - at > REPLAY_WINDOW_S:
                        del self._seen[seen]
                replayed = signature in self._seen
                self._seen[signature] = now
            if replayed:
                from slack_bolt import BoltResponse  # noqa: PLC0415

                log.warning("refused a replayed request")
                return BoltResponse(status=401, body='{"error":"replayed"}')
            return next()

        # Slack delivers again what it thinks failed (no acknowledgement within 3 seconds,
        # a connection lost, an error): HTTP mode with X-Slack-Retry-Num and -Reason, Socket
        # Mode in a new envelope with retry_attempt and retry_reason. Registered after
        # slack_bolt's signature check (a forged request claims nothing): a delivery seen
        # before is acknowledged, so the retries stop, and not acted on again.
        @app.middleware
        def _once(req: Any, resp: Any, next: Callable[[], Any]) -> Any:
            key = delivery_key(req.body)
            if key is None or self.commands.first_delivery(key):
                return next()
            from slack_bolt import BoltResponse  # noqa: PLC0415

            num, reason = (
                (req.headers.get(f"x-slack-retry-{h}") or ["?"])[0] for h in ("num", "reason")
            )
            log.info("ignored a repeated delivery of %s (retry %s: %s)", key, num, reason)
            return BoltResponse(status=200, body="")

    # -- running --------------------------------------------------------------------------

    def _answers(self) -> None:
        while not self._stop.wait(self.answer_poll_s):
            try:
                self.commands.deliver_answers()
            except Exception:
                log.exception("posting answers failed")

    def _start_answers(self) -> None:
        thread = threading.Thread(target=self._answers, name="slack-answers", daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_socket_mode(self) -> None:
        """Connect (returns once connected) and start posting answers."""
        from slack_bolt.adapter.socket_mode import SocketModeHandler  # noqa: PLC0415

        if not self.config.app_token:
            raise UsageError(
                "Socket Mode needs an app-level token: set one of app_token_env, "
                "app_token_file, app_token_credential"
            )
        handler = SocketModeHandler(self.app, self.config.app_token.value("slack agent app token"))
        handler.connect()  # type: ignore[no-untyped-call]
        self._closers.append(handler.close)
        self._start_answers()

    def serve_http(self, host: str = "127.0.0.1", port: int = 3000) -> int:
        """Take Slack's requests at http://host:port/slack/events (put TLS in front);
        returns the port. Needs the signing secret: an unsigned agent is refused."""
        from socketserver import ThreadingMixIn  # noqa: PLC0415
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer  # noqa: PLC0415

        from slack_bolt.adapter.wsgi import SlackRequestHandler  # noqa: PLC0415

        if not self.config.signing_secret:
            raise UsageError(
                "HTTP mode needs Slack's signing secret: set one of signing_secret_env, "
                "signing_secret_file, signing_secret_credential"
            )

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        server = Server((host, port), Quiet)
        server.set_app(SlackRequestHandler(self.app))
        thread = threading.Thread(target=server.serve_forever, name="slack-http", daemon=True)
        thread.start()
        self._threads.append(thread)

        def close() -> None:
            server.shutdown()
            server.server_close()

        self._closers.append(close)
        self._start_answers()
        return int(server.server_address[1])

    def close(self) -> None:
        self._stop.set()
        for closer in reversed(self._closers):
            closer()
        for thread in self._threads:
            thread.join(10)
