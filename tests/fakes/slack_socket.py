"""Slack's Socket Mode, served locally as Slack documents it: `apps.connections.open`
(app-level token) hands out a WebSocket URL; the server greets with `hello`, sends
`events_api` and `interactive` envelopes and expects each acknowledged by its
`envelope_id`. Together
with FakeSlack's Web API (auth.test, chat.postMessage) the real slack_bolt app runs
against it unchanged."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


class FakeSocketMode:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.connections: list[ServerConnection] = []
        self.acks: list[dict[str, Any]] = []
        self.sent: dict[str, dict[str, Any]] = {}  # envelope_id: envelope
        self.ready = threading.Event()
        self.port = 0
        self._stopped = asyncio.Event()
        threading.Thread(
            target=self.loop.run_until_complete, args=(self._main(),), daemon=True
        ).start()
        if not self.ready.wait(10):
            raise RuntimeError("socket mode server did not start")

    async def _main(self) -> None:
        async with serve(self._session, self.host, 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self._stopped.wait()

    async def _session(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        await connection.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self.connections),
                    "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0TEST"},
                }
            )
        )
        async for raw in connection:
            data = json.loads(raw)
            if "envelope_id" in data:
                self.acks.append(data)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/link/?ticket={secrets.token_hex(8)}&app_id=A0TEST"

    def wait_connected(self, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.connections:
            if time.monotonic() > deadline:
                raise AssertionError("the app never connected")
            time.sleep(0.05)

    def send_interactive(self, payload: dict[str, Any]) -> str:
        """Deliver an interaction payload (a click on a button) as an envelope."""
        return self._send(
            {"envelope_id": secrets.token_hex(8), "type": "interactive",
             "accepts_response_payload": False, "payload": payload}
        )  # fmt: skip

    def _send(self, envelope: dict[str, Any]) -> str:
        self.sent[envelope["envelope_id"]] = envelope
        connection = self.connections[-1]
        asyncio.run_coroutine_threadsafe(connection.send(json.dumps(envelope)), self.loop).result(5)
        return str(envelope["envelope_id"])

    def send_event(self, event: dict[str, Any]) -> str:
        """Deliver one Events API event (an app_mention or a message) as an envelope."""
        envelope_id = secrets.token_hex(8)
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "token": "legacy-verification-token",
                "team_id": "T0TEST",
                "api_app_id": "A0TEST",
                "event": event,
                "type": "event_callback",
                "event_id": "Ev" + secrets.token_hex(5).upper(),
                "event_time": int(time.time()),
                "authorizations": [
                    {"team_id": "T0TEST", "user_id": "U0BOT", "is_bot": True,
                     "is_enterprise_install": False}
                ],
            },
        }  # fmt: skip
        return self._send(envelope)

    def redeliver(self, envelope_id: str, attempt: int = 1, reason: str = "timeout") -> str:
        """Deliver an envelope again, as Slack does when it thinks the first delivery
        failed: a new envelope, the same payload (the same event_id), with the retry's
        number and reason. Returns the new envelope's id."""
        again = {**self.sent[envelope_id], "envelope_id": secrets.token_hex(8)}
        if again["type"] == "events_api":
            again.update(retry_attempt=attempt, retry_reason=reason)
        return self._send(again)

    def wait_ack(self, envelope_id: str, timeout_s: float = 15) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(a["envelope_id"] == envelope_id for a in self.acks):
            if time.monotonic() > deadline:
                raise AssertionError(f"envelope {envelope_id} was never acknowledged")
            time.sleep(0.02)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stopped.set)
