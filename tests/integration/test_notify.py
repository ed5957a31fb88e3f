"""Notifications end to end: events in a real state database, delivered by the real
notifier threads to real local HTTP services: a webhook receiver that verifies the
signature, a Slack Web API server driven by the real slack_sdk client, and Apprise's
json:// plugin posting to the receiver."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from control import events
from control.errors import UsageError
from control.notify import signing
from control.notify.config import DEFAULT_KINDS, load_config
from control.notify.outbox import Outbox
from control.notify.service import Notifier
from control.state import StateStore
from tests.fakes.services import FakeSlack, Receiver

SECRET = "webhook-signing-key-0123456789"
TOKEN = "xoxb-test-token-abcdef0123456789"
HOOK = "/services/T000TEST/B000TEST/hooksecretXYZ0123456789"


def wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Receiver, FakeSlack]]:
    receiver = Receiver(SECRET.encode())
    slack = FakeSlack(TOKEN, "C0TEST", HOOK)
    monkeypatch.setenv("SA_TEST_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SA_TEST_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("SA_TEST_SLACK_HOOK", slack.url + HOOK)
    monkeypatch.setenv("SA_TEST_APPRISE", receiver.url.replace("http://", "json://") + "/apprise")
    yield receiver, slack
    receiver.down()
    slack.down()


def every_sink(receiver: Receiver, slack: FakeSlack, **common: Any) -> dict[str, Any]:
    options = {"group_s": 0.1, "min_interval_s": 0.2, "timeout_s": 2, **common}
    return {
        "sinks": [
            {"name": "hook", "type": "webhook", "url": receiver.url + "/hook",
             "secret_env": "SA_TEST_WEBHOOK_SECRET", **options},
            {"name": "slackbot", "type": "slack", "token_env": "SA_TEST_SLACK_TOKEN",
             "channel": "C0TEST", "base_url": slack.url + "/api/", **options},
            {"name": "slackhook", "type": "slack", "webhook_url_env": "SA_TEST_SLACK_HOOK",
             **options},
            {"name": "apprise", "type": "apprise", "urls_env": "SA_TEST_APPRISE", **options},
        ]
    }  # fmt: skip


def one_of_each(store: StateStore) -> tuple[str, list[int]]:
    """A run, then one event of every kind sinks get by default."""
    run_id = store.create_run("spec.json", "h", {}, [("api", "sa/api")])
    for kind in DEFAULT_KINDS:
        if kind == "run_created":
            continue
        fleet = kind.startswith(("worker_", "alert_", "rate_limit_"))
        store.event(
            None if fleet else run_id,
            kind,
            "api" if kind.startswith("phase_") else None,
            "w1" if fleet else None,
            {"reason": f"because of {kind} <!channel>"},
        )
    ids = [e.id for e in events.read(store.conn, limit=-1) if e.kind in DEFAULT_KINDS]
    return run_id, ids


def keys_in(texts: list[str]) -> list[str]:
    return [k for text in texts for k in re.findall(r"\[([\w-]+/\d+)\]", text)]


def delivered(receiver: Receiver, slack: FakeSlack) -> dict[str, list[str]]:
    """The dedupe keys each sink's service received, sorted (a copy shows twice)."""
    return {
        "hook": sorted(receiver.dedupe_keys()),
        "apprise": sorted(keys_in([m["message"] for m in receiver.apprise])),
        "slackbot": sorted(keys_in([p["text"] for p in slack.posts])),
        "slackhook": sorted(keys_in([p["text"] for p in slack.hook_posts])),
    }


def expected(ids: list[int]) -> dict[str, list[str]]:
    return {
        s: sorted(f"{s}/{i}" for i in ids) for s in ("hook", "apprise", "slackbot", "slackhook")
    }


def test_each_event_kind_reaches_each_sink_once(
    tmp_path: Path, services: tuple[Receiver, FakeSlack]
) -> None:
    receiver, slack = services
    state = tmp_path / "state.db"
    notifier = Notifier(state, load_config(every_sink(receiver, slack), "test"))
    store = StateStore(state)
    with notifier:
        run_id, ids = one_of_each(store)
        wanted = len(DEFAULT_KINDS)
        assert len(ids) == wanted
        wait_for(lambda: all(len(k) >= wanted for k in delivered(receiver, slack).values()))
        time.sleep(0.5)  # nothing more comes
    assert delivered(receiver, slack) == expected(ids)
    kinds = Counter(n["kind"] for d in receiver.accepted for n in d["notices"])
    assert kinds == Counter(DEFAULT_KINDS)
    # bursts are grouped: far fewer messages than events
    assert len(receiver.accepted) < wanted and len(slack.hook_posts) < wanted
    # Slack bot: one thread for the run, its updates inside it, the end broadcast too
    parents = [p for p in slack.posts if "thread_ts" not in p and run_id in p["text"]]
    assert len(parents) == 1
    replies = [p for p in slack.posts if p.get("thread_ts") == parents[0]["ts"]]
    assert any("run done" in p["text"] and p["reply_broadcast"] for p in replies)
    assert slack.errors == []
    # text from events is escaped for Slack: no channel-wide ping
    assert all("<!channel>" not in p["text"] for p in slack.posts + slack.hook_posts)
    assert any("&lt;!channel&gt;" in p["text"] for p in slack.posts)
    assert Outbox(store).counts() == {
        s: {"delivered": wanted} for s in ("hook", "slackbot", "slackhook", "apprise")
    }
    store.close()


def test_a_sink_down_for_a_while_then_back_gets_everything_once(
    tmp_path: Path, services: tuple[Receiver, FakeSlack]
) -> None:
    receiver, slack = services
    receiver.down()
    slack.down()
    state = tmp_path / "state.db"
    notifier = Notifier(state, load_config(every_sink(receiver, slack), "test"))
    store = StateStore(state)
    with notifier:
        _, ids = one_of_each(store)
        outbox = Outbox(store)

        def tried() -> bool:
            rows = store.conn.execute(
                "SELECT sink, MIN(attempts) AS a FROM outbox GROUP BY sink"
            ).fetchall()
            return len(rows) == 4 and all(r["a"] >= 1 for r in rows)

        wait_for(tried)
        errors = [r[0] for r in store.conn.execute("SELECT last_error FROM outbox")]
        assert all(e for e in errors)
        for secret in (SECRET, TOKEN, "hooksecretXYZ0123456789"):  # never stored
            assert not any(secret in e for e in errors)
        receiver.up()
        slack.up()
        wait_for(
            lambda: all(c == {"delivered": len(ids)} for c in outbox.counts().values()),
            timeout_s=40,
        )
    assert delivered(receiver, slack) == expected(ids)
    store.close()


def test_messages_wait_in_the_outbox_across_a_restart(
    tmp_path: Path, services: tuple[Receiver, FakeSlack]
) -> None:
    receiver, slack = services
    config = load_config({"sinks": [every_sink(receiver, slack)["sinks"][0]]}, "test")
    state = tmp_path / "state.db"
    receiver.down()
    first = Notifier(state, config)
    store = StateStore(state)
    with first:
        _, ids = one_of_each(store)
        wait_for(lambda: Outbox(store).counts().get("hook", {}).get("pending") == len(ids))
    receiver.up()
    # a new notifier (what a new process builds) sends them at once, backoff or not
    assert Notifier(state, config).run_once() == len(ids)
    assert sorted(receiver.dedupe_keys()) == sorted(f"hook/{i}" for i in ids)
    store.close()


def test_forged_and_replayed_requests_are_refused_by_the_documented_check(
    tmp_path: Path, services: tuple[Receiver, FakeSlack]
) -> None:
    receiver, slack = services
    state = tmp_path / "state.db"
    config = load_config({"sinks": [every_sink(receiver, slack)["sinks"][0]]}, "test")
    store = StateStore(state)
    notifier = Notifier(state, config)
    store.event(None, "worker_down", worker="w1", detail={"reason": "gone"})
    assert notifier.run_once() == 1
    body, headers = receiver.raw[0]

    def post(data: bytes, sent: dict[str, str]) -> int:
        request = urllib.request.Request(receiver.url + "/hook", data=data, method="POST")
        for name, value in sent.items():
            if name.lower().startswith("x-superagent"):
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post(body, headers) == 401  # the same request again: replayed
    assert "already received" in receiver.refused[-1]
    forged = body.replace(b"gone", b"fine")
    assert post(forged, headers | {signing.DELIVERY_HEADER: "new"}) == 401
    assert "does not match" in receiver.refused[-1]
    old = int(time.time()) - 3600
    stale = {
        signing.TIMESTAMP_HEADER: str(old),
        signing.SIGNATURE_HEADER: signing.sign(SECRET.encode(), old, body),
        signing.DELIVERY_HEADER: "other",
    }
    assert post(body, stale) == 401
    assert "tolerance" in receiver.refused[-1]
    wrong_key = signing.headers(b"not-the-key", body, "third")
    assert post(body, wrong_key) == 401
    assert post(body, {}) == 401
    assert len(receiver.accepted) == 1
    store.close()


@pytest.mark.parametrize(
    ("sinks", "message"),
    [
        ([{"name": "a", "type": "pager"}], "sinks[0].type: one of webhook, slack, apprise"),
        (
            [{"name": "a", "type": "webhook", "url": "http://x", "secret_env": "E", "colour": 1}],
            "sinks[0].colour: not a webhook sink setting",
        ),
        (
            [{"name": "a", "type": "webhook", "url": "http://x"}],
            "sinks[0]: a webhook needs secret_env or secret_file",
        ),
        (
            [{"name": "a", "type": "slack", "token_env": "T"}],
            "sinks[0].channel: a bot token posts to a channel id",
        ),
        (
            [{"name": "a", "type": "apprise", "urls_env": "U", "kinds": ["run_dun"]}],
            "sinks[0].kinds: unknown event kind 'run_dun'",
        ),
        (
            [{"name": "a", "type": "apprise", "urls_env": "U", "urls_file": "f"}],
            "sinks[0]: one secret only",
        ),
        (
            [{"name": "a", "type": "apprise", "urls_env": "U"}] * 2,
            "sink names must be unique",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_entry(sinks: list[Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        load_config({"sinks": sinks}, "notify.yml")


def test_secrets_come_from_the_environment_or_a_0600_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SA_TEST_UNSET", raising=False)
    entry = {"name": "a", "type": "webhook", "url": "http://127.0.0.1:9/"}
    with pytest.raises(UsageError, match="environment variable SA_TEST_UNSET is not set"):
        Notifier(
            tmp_path / "s.db",
            load_config({"sinks": [entry | {"secret_env": "SA_TEST_UNSET"}]}, "t"),
        )
    key = tmp_path / "key"
    key.write_text(SECRET)
    key.chmod(0o644)
    config = load_config({"sinks": [entry | {"secret_file": "key"}]}, "t", tmp_path)
    with pytest.raises(UsageError, match=r"key is readable by others \(mode 644\); chmod 600"):
        Notifier(tmp_path / "s.db", config)
    key.chmod(0o600)
    Notifier(tmp_path / "s.db", config)  # accepted
    assert SECRET not in repr(config)
