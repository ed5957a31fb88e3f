"""The three kinds of sink, each sending one grouped message per call and raising
DeliveryError when the service did not take it (the outbox then retries).

Secrets are resolved once when a sink is built and kept only in the client; every
error text leaving a sink passes `redact` first, so a token or a webhook URL never
reaches the outbox, a log or a terminal.
"""

from __future__ import annotations

import json
import logging
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from control.events import SCHEMA_VERSION
from control.notify import render, signing
from control.notify.config import SinkConfig
from control.notify.outbox import Notice
from control.state import StateStore

log = logging.getLogger("superagent.notify")

RUN_ENDS = ("run_done", "run_failed", "run_cancelled", "merge_failed")


class DeliveryError(Exception):
    """The sink did not accept the message; the text is already redacted."""


class Sink(Protocol):
    config: SinkConfig

    def group_key(self, notice: Notice) -> str | None:
        """Notices with the same key go out in one message."""

    def send(self, notices: Sequence[Notice], store: StateStore) -> None: ...


def redact(text: str, values: Iterable[str]) -> str:
    """Remove each secret from `text`, and for URLs their path and query too (HTTP
    libraries quote those without the host: a Slack webhook's secret is its path)."""
    for value in values:
        pieces = {value}
        if value.startswith(("http://", "https://")) or "://" in value:
            parts = urlsplit(value)
            pieces |= {parts.path, parts.query, parts.netloc.rpartition("@")[0]}
            pieces |= {p for p in parts.path.split("/") if len(p) >= 8}
        for piece in sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True):
            text = text.replace(piece, "***")
    return text


class WebhookSink:
    """A JSON POST signed with HMAC-SHA256 (see control.notify.signing, docs/notify.md)."""

    def __init__(self, config: SinkConfig) -> None:
        self.config = config
        self._key = config.secret.value(f"sink {config.name}").encode()
        self.secrets = [self._key.decode()]

    def group_key(self, notice: Notice) -> str | None:
        return None

    def send(self, notices: Sequence[Notice], store: StateStore) -> None:
        delivery = secrets.token_hex(12)
        document = {
            "v": SCHEMA_VERSION,
            "sink": self.config.name,
            "delivery": delivery,
            "text": render.body(notices),
            "notices": [{"dedupe_key": n.dedupe_key, "kind": n.kind, **n.payload} for n in notices],
        }
        data = json.dumps(document, ensure_ascii=False, sort_keys=True).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s)
            str(self.config.url),
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "superagent-notify",
                **signing.headers(self._key, data, delivery),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as answer:  # noqa: S310
                answer.read(1024)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"HTTP {exc.code} from the webhook") from None
        except (OSError, ValueError) as exc:
            raise DeliveryError(redact(f"webhook unreachable: {exc}", self.secrets)) from None


class SlackSink:
    """Slack: with a bot token, one thread per run (its first message starts it, every
    later one answers in it, the end is also sent to the channel); with an incoming
    webhook, plain messages."""

    def __init__(self, config: SinkConfig) -> None:
        from slack_sdk import WebClient  # noqa: PLC0415 - only fleets with Slack load it
        from slack_sdk.webhook import WebhookClient  # noqa: PLC0415

        self.config = config
        value = config.secret.value(f"sink {config.name}")
        self.secrets = [value]
        self.web: WebClient | None = None
        self.hook: WebhookClient | None = None
        timeout = max(1, int(config.timeout_s))
        if config.secret_is == "webhook_url":  # noqa: S105 - a setting name, not a secret
            self.hook = WebhookClient(value, timeout=timeout)
        else:
            options: dict[str, Any] = {"timeout": timeout}
            if config.base_url:
                options["base_url"] = config.base_url
            self.web = WebClient(token=value, **options)

    def group_key(self, notice: Notice) -> str | None:
        return notice.run_id if self.web is not None else None

    def send(self, notices: Sequence[Notice], store: StateStore) -> None:
        text = render.slack_escape(render.body(notices))
        try:
            if self.hook is not None:
                answer = self.hook.send(text=text)
                if answer.status_code != 200:
                    raise DeliveryError(f"Slack webhook answered {answer.status_code}")
                return
            assert self.web is not None
            run_id = notices[0].run_id
            channel = str(self.config.channel)
            if run_id is None:
                self.web.chat_postMessage(channel=channel, text=text)
                return
            thread = self._thread(store, run_id, channel)
            self.web.chat_postMessage(
                channel=channel,
                text=text,
                thread_ts=thread,
                reply_broadcast=any(n.kind in RUN_ENDS for n in notices),
            )
        except DeliveryError:
            raise
        except Exception as exc:  # slack_sdk raises many types; each means "retry"
            raise DeliveryError(redact(f"Slack: {exc}", self.secrets)) from None

    def _thread(self, store: StateStore, run_id: str, channel: str) -> str:
        """The ts of the run's parent message, posted (and remembered) on first use."""
        assert self.web is not None
        row = store.conn.execute(
            "SELECT ts FROM notify_threads WHERE sink = ? AND run_id = ? AND channel = ?",
            (self.config.name, run_id, channel),
        ).fetchone()
        if row is not None:
            return str(row["ts"])
        answer = self.web.chat_postMessage(channel=channel, text=f"superagent run {run_id}")
        ts = str(answer["ts"])
        with store.write() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO notify_threads (sink, run_id, channel, ts) "
                "VALUES (?, ?, ?, ?)",
                (self.config.name, run_id, channel, ts),
            )
        return ts


class AppriseSink:
    """Everything else (email, ntfy, Discord, Telegram, Matrix ...) through Apprise URLs,
    which carry their credentials and so come from the environment or a 0600 file."""

    def __init__(self, config: SinkConfig) -> None:
        import apprise  # noqa: PLC0415 - only fleets with Apprise sinks load it

        self.config = config
        urls = config.secret.value(f"sink {config.name}").split()
        self.secrets = list(urls)
        self.apprise = apprise.Apprise()
        for url in urls:
            if not self.apprise.add(url):
                raise DeliveryError(redact(f"sink {config.name}: Apprise refuses {url}", urls))

    def group_key(self, notice: Notice) -> str | None:
        return None

    def send(self, notices: Sequence[Notice], store: StateStore) -> None:
        try:
            ok = self.apprise.notify(title=render.title(notices), body=render.body(notices))
        except Exception as exc:  # a plugin's failure is a failed delivery
            raise DeliveryError(redact(f"Apprise: {exc}", self.secrets)) from None
        if not ok:
            raise DeliveryError("Apprise: at least one service did not take the message")


def build(config: SinkConfig) -> Sink:
    kinds: dict[str, type[WebhookSink] | type[SlackSink] | type[AppriseSink]] = {
        "webhook": WebhookSink,
        "slack": SlackSink,
        "apprise": AppriseSink,
    }
    return kinds[config.type](config)
