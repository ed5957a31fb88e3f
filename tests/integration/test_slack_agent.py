"""The Slack agent (`control slack`, first part) against a local Slack: the real
slack_bolt app in Socket Mode, connected to a local server that speaks Socket Mode and
the Web API as Slack documents them; a real state database behind it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control import slack_agent
from control.errors import UsageError
from control.state import StateStore
from tests.fakes.services import FakeSlack
from tests.fakes.slack_socket import FakeSocketMode
from tests.injection import corpus

BOT = "xoxb-agent-bot-token-0123456789"
APP = "xapp-1-agent-app-token-0123456789"
READER, ACTOR, STRANGER = "U0READER", "U0ACTOR", "U0STRANGER"


class Rig:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.socket = FakeSocketMode()
        self.slack = FakeSlack(BOT, "C0TEST", "/services/x", app_token=APP, socket=self.socket)
        monkeypatch.setenv("SA_TEST_APP_TOKEN", APP)
        monkeypatch.setenv("SA_TEST_BOT_TOKEN", BOT)
        self.state = root / "state.db"
        store = StateStore(self.state)
        self.run_id = store.create_run("/specs/web.json", "h", {}, [("api", "sa/api")])
        store.update_worker("w1", status="down", reason="refusing work: node 18 != 22")
        store.close()
        self.config = slack_agent.load_agent_config(
            {
                "app_token_env": "SA_TEST_APP_TOKEN",
                "bot_token_env": "SA_TEST_BOT_TOKEN",
                "allow": {"read": [READER], "act": [ACTOR]},
                "base_url": self.slack.url + "/api/",
            },
            "test",
        )
        self.handler = slack_agent.build(self.config, self.state)
        self.handler.connect()
        self.socket.wait_connected()

    def ask(self, user: str, text: str, channel_type: str = "channel") -> dict[str, Any]:
        """Send a message as `user`; return the agent's reply in its thread."""
        ts = f"{1_900_000_000 + time.monotonic_ns() % 10**6}.000100"
        kind = "app_mention" if channel_type == "channel" else "message"
        before = len(self.slack.posts)
        self.slack.people_said.add(ts)  # Slack keeps the person's message
        envelope = self.socket.send_event(
            {"type": kind, "user": user, "text": text, "ts": ts, "channel": "C0TEST",
             "channel_type": channel_type, "event_ts": ts}
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while len(self.slack.posts) <= before:
            assert time.monotonic() < deadline, "no reply"
            time.sleep(0.05)
        assert any(a["envelope_id"] == envelope for a in self.socket.acks)
        reply = self.slack.posts[-1]
        assert reply["thread_ts"] == ts  # answered in the thread of the question
        return reply

    def audit(self) -> list[tuple[str, str, str]]:
        store = StateStore(self.state)
        try:
            rows = store.conn.execute("SELECT user, command, outcome FROM slack_audit ORDER BY id")
            return [(r["user"], r["command"], r["outcome"]) for r in rows.fetchall()]
        finally:
            store.close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    built = Rig(tmp_path, monkeypatch)
    yield built
    built.handler.close()
    built.socket.stop()
    built.slack.down()


def test_an_allow_listed_user_gets_the_status_in_the_thread(rig: Rig) -> None:
    reply = rig.ask(READER, "<@U0BOT> status")
    assert f"run {rig.run_id}" in reply["text"] and "- api: waiting" in reply["text"]
    assert "w1: down (refusing work: node 18 != 22)" in rig.ask(READER, "<@U0BOT> workers")["text"]
    assert rig.run_id in rig.ask(ACTOR, "runs", channel_type="im")["text"]
    assert rig.audit() == [
        (READER, "<@U0BOT> status", "answered"),
        (READER, "<@U0BOT> workers", "answered"),
        (ACTOR, "runs", "answered"),
    ]


def test_an_unlisted_user_is_refused_and_recorded(rig: Rig) -> None:
    reply = rig.ask(STRANGER, "<@U0BOT> status")
    assert "may not run `status`" in reply["text"] and rig.run_id not in reply["text"]
    reply = rig.ask(READER, "<@U0BOT> cancel api")  # a reader may not act
    assert "may not run `cancel`" in reply["text"]
    reply = rig.ask(ACTOR, "<@U0BOT> cancel api")
    assert "not available from Slack yet" in reply["text"]
    assert [o for _, _, o in rig.audit()] == ["refused", "refused", "unavailable"]


def test_hostile_text_is_recorded_verbatim_and_never_echoed_raw(rig: Rig, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    for sample in [*corpus(canary), "<!channel> <@U0ADMIN> <https://evil.example|click>"]:
        text = f"<@U0BOT> status {sample}"
        reply = rig.ask(READER, text)
        assert "<!channel>" not in reply["text"] and "<@U0ADMIN>" not in reply["text"]
        assert "<https://" not in reply["text"]
        assert rig.audit()[-1] == (READER, text, "answered")
    assert not canary.exists()


def test_bad_agent_settings_are_refused_naming_the_entry() -> None:
    with pytest.raises(UsageError, match=r"allow\.read: a list of Slack user ids"):
        slack_agent.load_agent_config(
            {"app_token_env": "A", "bot_token_env": "B", "allow": {"read": ["bob"]}}, "inv"
        )
    with pytest.raises(UsageError, match="set one of app_token_env, app_token_file"):
        slack_agent.load_agent_config({"bot_token_env": "B"}, "inv")


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
