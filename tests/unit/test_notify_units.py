"""The pure parts of notifications: signing, redaction, rendering, and reading the
fleet's sinks from a real inventory directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from control.errors import UsageError
from control.inventory import load_inventory
from control.notify import render, signing
from control.notify.config import from_inventory, load_config
from control.notify.outbox import Notice, Outbox
from control.notify.sinks import redact
from control.state import StateStore
from tests.conftest import Clock

KEY = b"k" * 32


def test_a_signed_body_verifies_and_every_change_is_refused() -> None:
    body = b'{"v": 1}'
    sent = signing.headers(KEY, body, "d1", now=1000)
    assert signing.verify(KEY, body, sent, now=1010) == "d1"
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(KEY, body + b" ", sent, now=1010)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(b"other", body, sent, now=1010)
    with pytest.raises(signing.SignatureError, match="tolerance"):
        signing.verify(KEY, body, sent, now=1000 + 301)
    with pytest.raises(signing.SignatureError, match="missing"):
        signing.verify(KEY, body, {}, now=1000)
    seen: dict[str, float] = {}
    signing.verify(KEY, body, sent, now=1010, seen=seen)
    with pytest.raises(signing.SignatureError, match="already received"):
        signing.verify(KEY, body, sent, now=1020, seen=seen)


def test_redact_removes_secrets_and_the_path_of_secret_urls() -> None:
    url = "https://hooks.slack.com/services/T0AAAA/B0BBBB/abcdefghij0123456789"
    error = (
        "HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with "
        "url: /services/T0AAAA/B0BBBB/abcdefghij0123456789 (token xoxb-123456789-secret)"
    )
    cleaned = redact(error, [url, "xoxb-123456789-secret"])
    assert "abcdefghij0123456789" not in cleaned and "xoxb" not in cleaned
    assert "hooks.slack.com" in cleaned  # where it failed stays readable


def notice(kind: str, detail: dict[str, object], context: dict[str, object]) -> Notice:
    event = {"kind": kind, "run_id": "r1", "phase_id": "api", "worker": None, "detail": detail}
    return Notice(1, "team", "team/7", "r1", kind, {"event": event, "context": context}, 0, 0.0)


def test_a_failed_run_says_what_a_person_needs_to_act() -> None:
    text = render.line(
        notice(
            "run_failed",
            {"reason": "api: verify failed"},
            {
                "dead": {"api": {"reason": "verify failed", "log_tail": "AssertionError: 2 != 3"}},
                "duration_s": 125.0,
                "cost_usd": 1.5,
            },
        )
    )
    assert text.splitlines()[0] == "run FAILED: run r1, phase api"
    assert "- api: verify failed" in text and "AssertionError: 2 != 3" in text
    assert "after 2m05s, cost $1.50" in text and text.endswith("[team/7]")


def test_a_budget_stop_says_what_was_spent_of_what() -> None:
    text = render.line(
        notice("budget_stop", {"reason": "stopped by its budget: api needs $0.50",
                               "spent_usd": 4.61234, "budget_usd": 5.0}, {})
    )  # fmt: skip
    assert text.splitlines()[0] == "run stopped by its budget: run r1, phase api"
    assert "why: stopped by its budget: api needs $0.50" in text
    assert "spent $4.61 of a $5.00 budget" in text


def test_agent_text_is_cut_and_escaped_for_slack() -> None:
    text = render.line(notice("phase_dead", {"reason": "<!channel> " + "x" * 5000}, {}))
    assert len(text) < 600
    escaped = render.slack_escape(text)
    assert "<!channel>" not in escaped and "&lt;!channel&gt;" in escaped


def inventory(root: Path, group_vars: str | None) -> Path:
    """A fresh directory each time: Ansible caches what it found under a path."""
    (root / "group_vars").mkdir(parents=True)
    (root / "hosts.yml").write_text(
        "all:\n  children:\n    workers:\n      hosts:\n        w1:\n"
        "          superagent_transport: local\n"
    )
    if group_vars is not None:
        (root / "group_vars" / "all.yml").write_text(group_vars)
    return root


def test_the_fleets_sinks_come_from_the_inventory(tmp_path: Path) -> None:
    none = inventory(tmp_path / "none", None)
    assert from_inventory(none, load_inventory(none)).sinks == ()
    inline = inventory(
        tmp_path / "inline",
        "superagent_notify:\n  sinks:\n    - {name: ops, type: apprise, urls_env: X}\n",
    )
    (sink,) = from_inventory(inline, load_inventory(inline)).sinks
    assert (sink.name, sink.type, sink.secret.env) == ("ops", "apprise", "X")
    named = inventory(tmp_path / "named", "superagent_notify_file: notify.yml\n")
    (named / "notify.yml").write_text("sinks: [{name: a, type: slack}]\n")
    with pytest.raises(UsageError, match=re.escape("notify.yml: sinks[0]: no secret")):
        from_inventory(named, load_inventory(named))
    (named / "notify.yml").write_text("sinks: [\n")
    with pytest.raises(UsageError, match=re.escape("notify.yml: invalid YAML at line 2")):
        from_inventory(named, load_inventory(named))
    (named / "notify.yml").unlink()
    with pytest.raises(UsageError, match=re.escape("notify.yml: cannot read")):
        from_inventory(named, load_inventory(named))


def test_a_refused_notice_backs_off_doubling_and_is_dead_after_a_week(tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(tmp_path / "state.db", clock=clock)
    config = load_config(
        {"sinks": [{"name": "ops", "type": "apprise", "urls_env": "X", "kinds": ["worker_up"]}]},
        "t",
    )
    (sink,) = config.sinks
    outbox = Outbox(store)
    assert outbox.route(sink) == 0  # a new sink starts at the end of the stream
    store.event(None, "worker_up", worker="w1")
    store.event(None, "worker_down", worker="w1")  # not a kind this sink wants
    assert outbox.route(sink) == 1
    assert outbox.route(sink) == 0  # routed once
    delays = []
    for _ in range(4):
        (due,) = outbox.due("ops")
        delays.append(outbox.failed([due], "HTTP 503"))
        assert outbox.due("ops") == []
        clock.advance(delays[-1])
    assert delays == [2.0, 4.0, 8.0, 16.0]
    clock.advance(8 * 24 * 3600)
    (due,) = outbox.due("ops")
    outbox.failed([due], "HTTP 503")
    assert outbox.counts() == {"ops": {"dead": 1}}
    store.close()
