"""Real local HTTP services for the notification tests (stdlib http.server on
127.0.0.1): a webhook receiver that verifies superagent's signature as docs/notify.md
tells a receiver to, and a server that speaks Slack's Web API (chat.postMessage) and
incoming webhooks as Slack documents them, for the real slack_sdk to talk to."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from control.notify import signing


class _Server:
    """A ThreadingHTTPServer on a fixed port that can go down and come back."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host  # the fleet's bridge address, for hosts of the test fleet
        self.httpd: ThreadingHTTPServer | None = None
        self.lock = threading.Lock()
        self.up()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def up(self) -> None:
        self.httpd = ThreadingHTTPServer((self.host, self.port), self.handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop answering: connections are refused until `up`."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _body(handler: BaseHTTPRequestHandler) -> bytes:
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _answer(handler: BaseHTTPRequestHandler, code: int, body: bytes, kind: str) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Receiver(_Server):
    """The generic webhook's receiver: `accepted` holds verified documents, `refused`
    the reasons of refused requests; `/apprise` takes Apprise's json:// posts."""

    def __init__(self, secret: bytes, port: int = 0) -> None:
        self.secret = secret
        self.seen: dict[str, float] = {}
        self.accepted: list[dict[str, Any]] = []
        self.raw: list[tuple[bytes, dict[str, str]]] = []
        self.refused: list[str] = []
        self.apprise: list[dict[str, Any]] = []
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        super().__init__(port)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = _body(self)
                with receiver.lock:
                    if self.path == "/apprise":
                        receiver.apprise.append(json.loads(body))
                        _answer(self, 200, b"{}", "application/json")
                        return
                    headers = dict(self.headers.items())
                    try:
                        signing.verify(receiver.secret, body, headers, seen=receiver.seen)
                    except signing.SignatureError as exc:
                        receiver.refused.append(str(exc))
                        _answer(self, 401, str(exc).encode(), "text/plain")
                        return
                    document = json.loads(body)
                    receiver.raw.append((body, headers))
                    receiver.accepted.append(document)
                    receiver.arrivals.append((time.time(), document))
                _answer(self, 204, b"", "text/plain")

        return Handler

    def dedupe_keys(self) -> list[str]:
        with self.lock:
            return [n["dedupe_key"] for d in self.accepted for n in d["notices"]]


class FakeSlack(_Server):
    """Slack's Web API `chat.postMessage` and `chat.update` (JSON or form body, bearer
    token, the documented `ok`/`error` answers), an incoming webhook at `/services/...`,
    and the `block_actions` payload of a click on a button of a posted message."""

    def __init__(
        self,
        token: str,
        channel: str,
        hook_path: str,
        port: int = 0,
        *,
        app_token: str | None = None,
        socket: Any = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.socket = socket  # a FakeSocketMode: apps.connections.open hands out its URL
        self.channel = channel
        self.hook_path = hook_path
        self.posts: list[dict[str, Any]] = []  # every accepted chat.postMessage
        self.hook_posts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []  # each chat.update, as the message became
        self.errors: list[str] = []
        self.people_said: set[str] = set()  # ts of people's messages (threads to answer in)
        self._seq = 0
        self._clicks = 0  # each click has a trigger_id of its own
        super().__init__(port, host)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        slack = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = _body(self)
                with slack.lock:
                    if self.path in ("/api/chat.postMessage", "/api/chat.update"):
                        answer = slack.post_message(self.headers, body, self.path)
                        _answer(self, 200, json.dumps(answer).encode(), "application/json")
                    elif self.path in ("/api/auth.test", "/api/apps.connections.open"):
                        answer = slack.session(self.path, self.headers)
                        _answer(self, 200, json.dumps(answer).encode(), "application/json")
                    elif self.path.startswith("/services/"):
                        code, text = slack.incoming(self.path, body)
                        _answer(self, code, text.encode(), "text/html")
                    else:
                        _answer(self, 404, b"not found", "text/plain")

        return Handler

    def post_message(self, headers: Any, body: bytes, path: str) -> dict[str, Any]:
        auth = headers.get("Authorization") or ""
        kind = (headers.get("Content-Type") or "").split(";")[0]
        if kind == "application/json":
            args = json.loads(body or b"{}")
        else:
            args = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            auth = auth or ("Bearer " + args.pop("token", "")) if "token" in args else auth
        if not auth.startswith("Bearer ") or not auth[7:]:
            return self._error("not_authed")
        if auth[7:] != self.token:
            return self._error("invalid_auth")
        if args.get("channel") != self.channel:
            return self._error("channel_not_found")
        return self.update(args) if path == "/api/chat.update" else self.post(args)

    def post(self, args: dict[str, Any]) -> dict[str, Any]:
        """chat.postMessage, its caller authenticated."""
        if not args.get("text") and not args.get("blocks"):
            return self._error("no_text")
        thread = args.get("thread_ts")
        if (
            thread is not None
            and thread not in self.people_said
            and not any(p["ts"] == thread and "thread_ts" not in p for p in self.posts)
        ):
            return self._error("thread_not_found")
        self._seq += 1
        ts = f"{1_800_000_000 + self._seq}.{self._seq:06d}"
        message: dict[str, Any] = {"type": "message", "text": args.get("text"), "ts": ts}
        if thread is not None:
            message["thread_ts"] = thread
        if args.get("blocks"):
            blocks = args["blocks"]
            message["blocks"] = json.loads(blocks) if isinstance(blocks, str) else blocks
        self.posts.append({**message, "reply_broadcast": bool(args.get("reply_broadcast"))})
        return {"ok": True, "channel": self.channel, "ts": ts, "message": message}

    def update(self, args: dict[str, Any]) -> dict[str, Any]:
        """chat.update: only a message the bot posted, found by its `ts`."""
        found = [p for p in self.posts if p["ts"] == args.get("ts")]
        if not found:
            return self._error("message_not_found")
        message = found[0]
        if "text" in args:
            message["text"] = args["text"]
        if "blocks" in args:
            blocks = args["blocks"]
            message["blocks"] = json.loads(blocks) if isinstance(blocks, str) else blocks
        self.updates.append(dict(message))
        return {"ok": True, "channel": self.channel, "ts": message["ts"], "text": message["text"]}

    def click(
        self, user: str, message: dict[str, Any], action_id: str, value: str | None = None
    ) -> dict[str, Any]:
        """The block_actions payload Slack sends when `user` clicks the button
        `action_id` of `message` (a post of the bot's), as its docs describe it;
        `value` forges another value than the button's."""
        (button,) = [
            (block, element)
            for block in message.get("blocks") or []
            if block.get("type") == "actions"
            for element in block["elements"]
            if element.get("action_id") == action_id
        ]
        block, element = button
        shown = {k: v for k, v in message.items() if k != "reply_broadcast"}
        self._clicks += 1
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(),
                     "team_id": "T0TEST"},
            "api_app_id": "A0TEST",
            "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": message["ts"],
                          "channel_id": self.channel, "is_ephemeral": False},
            "trigger_id": f"{self._seq}.{self._clicks}.fake",
            "team": {"id": "T0TEST", "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": self.channel, "name": "superagent"},
            "message": {**shown, "user": "U0BOT", "bot_id": "B0BOT"},
            "state": {"values": {}},
            "response_url": f"{self.url}/actions/T0TEST/1/fake",
            "actions": [{
                "action_id": action_id, "block_id": block.get("block_id", "b"),
                "text": element["text"], "value": element["value"] if value is None else value,
                "style": element.get("style"), "type": "button",
                "action_ts": f"{time.time():.6f}",
            }],
        }  # fmt: skip

    def session(self, path: str, headers: Any) -> dict[str, Any]:
        """auth.test with the bot token; apps.connections.open with the app-level token."""
        auth = (headers.get("Authorization") or "").removeprefix("Bearer ")
        if not auth:
            return self._error("not_authed")
        if path == "/api/auth.test":
            if auth != self.token:
                return self._error("invalid_auth")
            return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake",
                    "user": "superagent", "team_id": "T0TEST", "user_id": "U0BOT",
                    "bot_id": "B0BOT", "is_enterprise_install": False}  # fmt: skip
        if auth != self.app_token or self.socket is None:
            return self._error("invalid_auth")
        return {"ok": True, "url": self.socket.url}

    def incoming(self, path: str, body: bytes) -> tuple[int, str]:
        if path != self.hook_path:
            return 404, "no_service"
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "invalid_payload"
        if not payload.get("text"):
            return 400, "no_text"
        self.hook_posts.append(payload)
        return 200, "ok"

    def _error(self, error: str) -> dict[str, Any]:
        self.errors.append(error)
        return {"ok": False, "error": error}
