"""The Slack agent (`control slack`) against a local Slack: the real slack_bolt app in
Socket Mode, connected to a local server that speaks Socket Mode and the Web API as
Slack documents them (events, `block_actions` clicks, chat.postMessage/update); a real
state database behind it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control import slack_commands
from control.errors import UsageError
from control.slack_agent import ABORT, CONFIRM, Agent
from control.slack_config import load_agent_config
from control.state import StateStore
from tests.fakes.services import FakeSlack
from tests.fakes.slack_socket import FakeSocketMode
from tests.injection import corpus

BOT = "xoxb-agent-bot-token-0123456789"
APP = "xapp-1-agent-app-token-0123456789"
READER, ACTOR, ACTOR2, STRANGER = "U0READER", "U0ACTOR", "U0ACTOR2", "U0STRANGER"


def typed(text: str) -> str:
    """What a person typed, as Slack sends it: &, < and > as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Rig:
    def __init__(
        self,
        root: Path,
        monkeypatch: pytest.MonkeyPatch,
        *,
        inventory: Path | None = None,
        workers: Any = (),
        settings: dict[str, Any] | None = None,
        state: Path | None = None,
    ) -> None:
        self.socket = FakeSocketMode()
        self.slack = FakeSlack(BOT, "C0TEST", "/services/x", app_token=APP, socket=self.socket)
        monkeypatch.setenv("SA_TEST_APP_TOKEN", APP)
        monkeypatch.setenv("SA_TEST_BOT_TOKEN", BOT)
        self.state = state or root / "state.db"
        store = StateStore(self.state)
        self.run_id = store.create_run("/specs/web.json", "h", {}, [("api", "sa/api")])
        store.update_worker("w1", status="down", reason="refusing work: node 18 != 22")
        store.close()
        self.config = load_agent_config(
            {
                "app_token_env": "SA_TEST_APP_TOKEN",
                "bot_token_env": "SA_TEST_BOT_TOKEN",
                "allow": {"read": [READER], "act": [ACTOR, ACTOR2]},
                "base_url": self.slack.url + "/api/",
                **(settings or {}),
            },
            "test",
        )
        self.inventory, self.workers = inventory, workers
        self.agent = Agent(self.config, self.state, inventory, workers, answer_poll_s=0.2)
        self.agent.start_socket_mode()
        self.socket.wait_connected()

    def restart(self) -> None:
        """Stop the agent and start another on the same state database (a new process,
        as far as it knows: nothing kept in memory)."""
        self.agent.close()
        before = len(self.socket.connections)
        self.agent = Agent(self.config, self.state, self.inventory, self.workers, answer_poll_s=0.2)
        self.agent.start_socket_mode()
        deadline = time.monotonic() + 15
        while len(self.socket.connections) == before:
            assert time.monotonic() < deadline, "the restarted agent never connected"
            time.sleep(0.05)

    def wait_posts(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 60
        while len(self.slack.posts) < count:
            assert time.monotonic() < deadline, f"no post #{count}: {self.slack.posts}"
            time.sleep(0.05)
        return self.slack.posts

    def ask(self, user: str, text: str, channel_type: str = "channel") -> dict[str, Any]:
        """Send a message as `user` (text as Slack sends it); return the agent's reply,
        which must be in the thread of the message."""
        ts = f"{1_900_000_000 + time.monotonic_ns() % 10**6}.000100"
        kind = "app_mention" if channel_type == "channel" else "message"
        before = len(self.slack.posts)
        self.slack.people_said.add(ts)  # Slack keeps the person's message
        envelope = self.socket.send_event(
            {"type": kind, "user": user, "text": text, "ts": ts, "channel": "C0TEST",
             "channel_type": channel_type, "event_ts": ts}
        )  # fmt: skip
        self.envelope = envelope  # what Slack would deliver again
        reply = self.wait_posts(before + 1)[before]
        assert any(a["envelope_id"] == envelope for a in self.socket.acks)
        assert reply["thread_ts"] == ts  # answered in the thread of the question
        return reply

    def click(
        self, user: str, prompt: dict[str, Any], action: str = CONFIRM, value: str | None = None
    ) -> dict[str, Any]:
        """`user` clicks a button of the agent's question; returns the agent's answer."""
        self.payload = self.slack.click(user, prompt, action, value)
        return self.send(self.payload, prompt)

    def send(self, payload: dict[str, Any], prompt: dict[str, Any]) -> dict[str, Any]:
        """Deliver a click's payload (again: a replay); returns the agent's answer."""
        before = len(self.slack.posts)
        envelope = self.socket.send_interactive(payload)
        self.click_envelope = envelope
        answer = self.wait_posts(before + 1)[before]
        assert any(a["envelope_id"] == envelope for a in self.socket.acks)
        assert answer["thread_ts"] == prompt["thread_ts"]
        return answer

    def audit(self) -> list[tuple[str, str, str]]:
        store = StateStore(self.state)
        try:
            rows = store.conn.execute("SELECT user, command, outcome FROM slack_audit ORDER BY id")
            return [(r["user"], r["command"], r["outcome"]) for r in rows.fetchall()]
        finally:
            store.close()

    def phase_state(self) -> str:
        store = StateStore(self.state)
        try:
            return store.phases(self.run_id)["api"].state
        finally:
            store.close()

    def close(self) -> None:
        self.agent.close()
        self.socket.stop()
        self.slack.down()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    built = Rig(tmp_path, monkeypatch)
    yield built
    built.close()


def buttons(post: dict[str, Any]) -> list[str]:
    return [
        e["action_id"]
        for b in post.get("blocks") or []
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def test_an_allow_listed_user_gets_the_status_in_the_thread(rig: Rig) -> None:
    reply = rig.ask(READER, "<@U0BOT> status")
    assert f"run {rig.run_id}" in reply["text"] and "- api: waiting" in reply["text"]
    assert "w1: down (refusing work: node 18 != 22)" in rig.ask(READER, "<@U0BOT> workers")["text"]
    assert rig.run_id in rig.ask(ACTOR, "runs", channel_type="im")["text"]
    assert "no worker in the inventory" in rig.ask(READER, "<@U0BOT> health")["text"]
    assert rig.audit() == [
        (READER, "<@U0BOT> status", "answered"),
        (READER, "<@U0BOT> workers", "answered"),
        (ACTOR, "runs", "answered"),
        (READER, "<@U0BOT> health", "answered"),
    ]


def test_an_unlisted_user_is_refused_and_recorded(rig: Rig) -> None:
    reply = rig.ask(STRANGER, "<@U0BOT> status")
    assert "may not run `status`" in reply["text"] and rig.run_id not in reply["text"]
    assert "may not run `health`" in rig.ask(STRANGER, "<@U0BOT> health")["text"]
    for command in ("cancel api", "retry api", "enqueue w1 hi", "dispatch web.json"):
        reply = rig.ask(READER, f"<@U0BOT> {command}")  # a reader may not act
        assert f"may not run `{command.split()[0]}`" in reply["text"] and not buttons(reply)
    assert [o for _, _, o in rig.audit()] == ["refused"] * 6
    assert rig.phase_state() == "waiting"


def test_an_acting_command_waits_for_its_askers_confirmation(rig: Rig) -> None:
    prompt = rig.ask(ACTOR, "<@U0BOT> cancel api")
    assert buttons(prompt) == [CONFIRM, ABORT]
    assert f"cancel api of run {rig.run_id}" in prompt["text"]
    assert rig.phase_state() == "waiting"  # nothing done before the click
    # Someone else's click does nothing: a stranger, a reader, another actor.
    for other in (STRANGER, READER, ACTOR2):
        answer = rig.click(other, prompt)
        assert f"only <@{ACTOR}> can confirm this" in answer["text"]
        assert rig.phase_state() == "waiting"
    stale = rig.slack.click(ACTOR, prompt, CONFIRM)  # a second click, from a window not updated yet
    answer = rig.click(ACTOR, prompt)
    assert f"cancelled api of run {rig.run_id}" in answer["text"]
    assert rig.phase_state() == "cancelled"
    assert not buttons(rig.slack.updates[-1])  # the question lost its buttons
    assert f"confirmed by <@{ACTOR}>" in rig.slack.updates[-1]["text"]
    # Another click on the decided question does nothing more.
    assert "this was confirmed already" in rig.send(stale, prompt)["text"]
    # Retrying is acting too: confirmed, the phase waits again.
    prompt = rig.ask(ACTOR, "<@U0BOT> retry api")
    assert "will run again" in rig.click(ACTOR, prompt)["text"]
    assert rig.phase_state() == "waiting"
    outcomes = [(u, o) for u, _, o in rig.audit()]
    assert outcomes == [
        (ACTOR, "confirm"), (STRANGER, "refused"), (READER, "refused"), (ACTOR2, "refused"),
        (ACTOR, "done"), (ACTOR, "refused"), (ACTOR, "confirm"), (ACTOR, "done"),
    ]  # fmt: skip
    assert rig.audit()[4][1] == "[confirm] cancel api"


def test_slacks_retries_of_a_command_and_of_a_click_act_once_even_after_a_restart(
    rig: Rig,
) -> None:
    """Slack delivers again what it thinks failed (Socket Mode: a new envelope, the same
    event_id, with retry_attempt and retry_reason; a click's payload again): the command
    asks once, the click cancels once, and a restarted agent knows them too."""
    prompt = rig.ask(ACTOR, "<@U0BOT> cancel api")
    asked = rig.envelope
    rig.socket.wait_ack(rig.socket.redeliver(asked, 1, "timeout"))
    assert f"cancelled api of run {rig.run_id}" in rig.click(ACTOR, prompt)["text"]
    clicked = rig.click_envelope
    rig.socket.wait_ack(rig.socket.redeliver(clicked))
    rig.restart()
    rig.socket.wait_ack(rig.socket.redeliver(asked, 2, "timeout"))
    rig.socket.wait_ack(rig.socket.redeliver(clicked))
    # A message after them is answered: the retries were handled (acknowledged) first.
    assert rig.run_id in rig.ask(READER, "<@U0BOT> runs")["text"]
    time.sleep(0.5)  # what a retry acted on would have posted by now
    assert len(rig.slack.posts) == 3 and len(rig.slack.updates) == 1, rig.slack.posts
    assert rig.phase_state() == "cancelled"
    assert rig.audit() == [
        (ACTOR, "<@U0BOT> cancel api", "confirm"),
        (ACTOR, "[confirm] cancel api", "done"),
        (READER, "<@U0BOT> runs", "answered"),
    ]
    store = StateStore(rig.state)
    try:
        assert store.conn.execute("SELECT count(*) FROM slack_pending").fetchone()[0] == 1
    finally:
        store.close()


def test_a_forged_aborted_or_expired_confirmation_does_nothing(rig: Rig) -> None:
    prompt = rig.ask(ACTOR, "<@U0BOT> cancel api")
    forged = rig.click(ACTOR, prompt, value="not-a-token")
    assert "no such confirmation" in forged["text"]
    confirm = rig.slack.click(ACTOR, prompt, CONFIRM)
    assert "nothing done" in rig.click(ACTOR, prompt, ABORT)["text"]
    assert f"cancelled by <@{ACTOR}>" in rig.slack.updates[-1]["text"]
    assert "this was aborted already" in rig.send(confirm, prompt)["text"]
    assert rig.phase_state() == "waiting"
    prompt = rig.ask(ACTOR, "<@U0BOT> cancel api")
    store = StateStore(rig.state)
    with store.write() as conn:  # asked eleven minutes ago
        conn.execute("UPDATE slack_pending SET created_at = created_at - 660")
    store.close()
    assert "expired" in rig.click(ACTOR, prompt)["text"]
    assert rig.phase_state() == "waiting"


def test_a_command_that_cannot_be_done_is_refused_before_any_button(rig: Rig) -> None:
    for text, why in [
        ("cancel nope", "has no phase 'nope'"),
        ("retry", "`retry` needs phase names"),
        ("cancel r20990101-000000-abcd", "r20990101-000000-abcd"),
        ("enqueue nobody hello", "no worker 'nobody' in the inventory"),
        ("enqueue w1", "`enqueue` takes a worker and a task"),
        ("dispatch web.json", "dispatching from Slack is off"),
    ]:
        reply = rig.ask(ACTOR, f"<@U0BOT> {text}")
        assert why in reply["text"] and not buttons(reply), (text, reply)
    assert {o for _, _, o in rig.audit()} == {"failed"}


def test_hostile_text_is_recorded_verbatim_and_never_echoed_raw(rig: Rig, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    hostile = "<!channel> <@U0ADMIN> <https://evil.example|click> <!here>"
    for sample in [*corpus(canary), hostile]:
        for text in (f"<@U0BOT> status {sample}", f"<@U0BOT> cancel {sample}"):
            reply = rig.ask(ACTOR, text)
            for raw in ("<!channel>", "<!here>", "<@U0ADMIN>", "<https://"):
                assert raw not in reply["text"], (text, reply["text"])
            assert rig.audit()[-1][:2] == (ACTOR, text)
    assert not canary.exists()


def test_bad_agent_settings_are_refused_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"allow\.read: a list of Slack user ids"):
        load_agent_config({"bot_token_env": "B", "allow": {"read": ["bob"]}}, "inv")
    with pytest.raises(UsageError, match="set one of bot_token_env, bot_token_file"):
        load_agent_config({"app_token_env": "A"}, "inv")
    with pytest.raises(UsageError, match="set one of app_token_env, app_token_file"):
        load_agent_config({"bot_token_env": "B", "app_token_env": "A", "app_token_file": "f"}, "i")
    with pytest.raises(UsageError, match=r"inv\.token: not a Slack agent setting"):
        load_agent_config({"bot_token_env": "B", "token": "xoxb-inline"}, "inv")


def test_socket_mode_without_an_app_token_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack = FakeSlack(BOT, "C0TEST", "/services/x")
    monkeypatch.setenv("SA_TEST_BOT_TOKEN", BOT)
    config = load_agent_config(
        {"bot_token_env": "SA_TEST_BOT_TOKEN", "base_url": slack.url + "/api/"}, "inv"
    )
    agent = Agent(config, tmp_path / "state.db")
    try:
        with pytest.raises(UsageError, match="Socket Mode needs an app-level token"):
            agent.start_socket_mode()
        with pytest.raises(UsageError, match="HTTP mode needs Slack's signing secret"):
            agent.serve_http(port=0)
    finally:
        agent.close()
        slack.down()


def test_a_token_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "slack-bot-token").write_text(BOT + "\n")
    config = load_agent_config({"bot_token_credential": "slack-bot-token"}, "inv")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(UsageError, match=r"no \$CREDENTIALS_DIRECTORY"):
        config.bot_token.value("bot")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert config.bot_token.value("bot") == BOT
    missing = load_agent_config({"bot_token_credential": "other"}, "inv")
    with pytest.raises(UsageError, match="cannot read credential 'other'"):
        missing.bot_token.value("bot")


def test_control_slack_without_settings_says_what_is_missing(tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from control.cli import app  # noqa: PLC0415

    inventory = tmp_path / "fleet"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    workers:\n      hosts:\n        w1:\n"
        "          superagent_transport: local\n"
    )
    result = CliRunner().invoke(app, ["slack", "--inventory", str(inventory)])
    assert result.exit_code == 2
    assert "no superagent_slack_agent in the inventory's group vars" in result.output


def test_unescape_undoes_only_slacks_three_entities() -> None:
    assert slack_commands.unescape(typed("a & <b> &amp; &lt;")) == "a & <b> &amp; &lt;"


# -- HTTP mode ---------------------------------------------------------------------------

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"


class HttpSlack:
    """Slack's side of HTTP mode: requests signed as Slack's docs describe (v0, the
    timestamp, HMAC-SHA256 with the signing secret), sent to the agent's endpoint."""

    def __init__(self, url: str, secret: str = SIGNING) -> None:
        from slack_sdk.signature import SignatureVerifier  # noqa: PLC0415

        self.url = url
        self.signer = SignatureVerifier(secret)

    def signed(self, body: bytes, at: float | None = None) -> dict[str, str]:
        stamp = str(int(time.time() if at is None else at))
        signature = self.signer.generate_signature(timestamp=stamp, body=body) or ""
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}

    def send(self, body: bytes, headers: dict[str, str], kind: str) -> tuple[int, bytes]:
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        request = urllib.request.Request(
            self.url, data=body, headers={**headers, "Content-Type": kind}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    @staticmethod
    def event(user: str, text: str, ts: str) -> bytes:
        import json  # noqa: PLC0415

        return json.dumps(
            {"token": "legacy", "team_id": "T0TEST", "api_app_id": "A0TEST",
             "type": "event_callback", "event_id": f"Ev{ts.replace('.', '')}",
             "event_time": int(time.time()),
             "event": {"type": "app_mention", "user": user, "text": text, "ts": ts,
                       "channel": "C0TEST", "event_ts": ts}}
        ).encode()  # fmt: skip


@pytest.fixture
def http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Rig, HttpSlack]]:
    slack = FakeSlack(BOT, "C0TEST", "/services/x")
    monkeypatch.setenv("SA_TEST_BOT_TOKEN", BOT)
    monkeypatch.setenv("SA_TEST_SIGNING", SIGNING)
    rig = Rig.__new__(Rig)  # the same helpers, without Socket Mode
    rig.slack, rig.state = slack, tmp_path / "state.db"
    store = StateStore(rig.state)
    rig.run_id = store.create_run("/specs/web.json", "h", {}, [("api", "sa/api")])
    store.close()
    rig.config = load_agent_config(
        {"bot_token_env": "SA_TEST_BOT_TOKEN", "signing_secret_env": "SA_TEST_SIGNING",
         "allow": {"act": [ACTOR]}, "base_url": slack.url + "/api/"},
        "test",
    )  # fmt: skip
    rig.agent = Agent(rig.config, rig.state)
    port = rig.agent.serve_http("127.0.0.1", 0)
    yield rig, HttpSlack(f"http://127.0.0.1:{port}/slack/events")
    rig.agent.close()
    slack.down()


def test_http_mode_answers_signed_requests_and_refuses_forged_old_and_replayed_ones(
    http: tuple[Rig, HttpSlack],
) -> None:
    rig, slack = http
    kind = "application/json"
    good = slack.event(ACTOR, "<@U0BOT> status", "1900000001.000100")
    rig.slack.people_said.update({"1900000001.000100", "1900000002.000100"})
    headers = slack.signed(good)
    assert slack.send(good, headers, kind)[0] == 200
    (reply,) = rig.wait_posts(1)
    assert f"run {rig.run_id}" in reply["text"] and reply["thread_ts"] == "1900000001.000100"
    # The same request again, signature and all, within the timestamp's window.
    assert slack.send(good, headers, kind)[0] == 401
    # Signed with another secret; a body changed after signing; no signature at all.
    forged = slack.event(ACTOR, "<@U0BOT> cancel api", "1900000002.000100")
    other = HttpSlack(slack.url, "another-signing-secret-0000000000")
    assert slack.send(forged, other.signed(forged), kind)[0] == 401
    assert slack.send(forged, slack.signed(good), kind)[0] == 401
    assert slack.send(forged, {}, kind)[0] == 401
    # Correctly signed, but six minutes old (a captured request replayed later).
    assert slack.send(forged, slack.signed(forged, at=time.time() - 360), kind)[0] == 401
    time.sleep(0.5)
    assert len(rig.slack.posts) == 1
    assert rig.audit() == [(ACTOR, "<@U0BOT> status", "answered")]
    # A click comes form-encoded (`payload=`), signed like any request.
    assert slack.send(forged, slack.signed(forged), kind)[0] == 200
    prompt = rig.wait_posts(2)[1]
    import json  # noqa: PLC0415
    from urllib.parse import urlencode  # noqa: PLC0415

    click = urlencode({"payload": json.dumps(rig.slack.click(ACTOR, prompt, CONFIRM))}).encode()
    form = "application/x-www-form-urlencoded"
    assert slack.send(click, other.signed(click), form)[0] == 401
    assert rig.phase_state() == "waiting"
    assert slack.send(click, slack.signed(click), form)[0] == 200
    assert "cancelled api" in rig.wait_posts(3)[2]["text"]
    assert rig.phase_state() == "cancelled"


def test_http_mode_acts_once_on_slacks_retries(http: tuple[Rig, HttpSlack]) -> None:
    """Slack's retry over HTTP: the same body, signed anew, with X-Slack-Retry-Num and
    X-Slack-Retry-Reason; acknowledged (200, so the retries stop), acted on once."""
    import json  # noqa: PLC0415
    from urllib.parse import urlencode  # noqa: PLC0415

    rig, slack = http
    kind, form = "application/json", "application/x-www-form-urlencoded"
    ask = slack.event(ACTOR, "<@U0BOT> cancel api", "1900000003.000100")
    rig.slack.people_said.update({"1900000003.000100", "1900000004.000100"})
    assert slack.send(ask, slack.signed(ask), kind)[0] == 200
    prompt = rig.wait_posts(1)[0]
    for attempt in (1, 2):
        headers = slack.signed(ask, at=time.time() + attempt)
        retry = {
            **headers,
            "X-Slack-Retry-Num": str(attempt),
            "X-Slack-Retry-Reason": "http_timeout",
        }
        assert slack.send(ask, retry, kind)[0] == 200
    click = urlencode({"payload": json.dumps(rig.slack.click(ACTOR, prompt, CONFIRM))}).encode()
    assert slack.send(click, slack.signed(click), form)[0] == 200
    assert "cancelled api" in rig.wait_posts(2)[1]["text"]
    assert slack.send(click, slack.signed(click, at=time.time() + 1), form)[0] == 200
    later = slack.event(ACTOR, "<@U0BOT> status", "1900000004.000100")
    assert slack.send(later, slack.signed(later), kind)[0] == 200
    assert f"run {rig.run_id}" in rig.wait_posts(3)[2]["text"]
    time.sleep(0.5)  # what a retry acted on would have posted by now
    assert len(rig.slack.posts) == 3, rig.slack.posts
    assert [o for _, _, o in rig.audit()] == ["confirm", "done", "answered"]


def test_ready_is_told_to_systemd_only_when_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket  # noqa: PLC0415

    from control.slack_agent import notify_ready  # noqa: PLC0415

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_ready() is False
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify_ready() is True
        assert systemd.recv(64) == b"READY=1"
