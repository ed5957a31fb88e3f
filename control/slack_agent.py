"""`control slack`: the Slack agent, a long-lived process connected to Slack in Socket
Mode (it opens no port), answering allow-listed people in a channel or a direct message.

This first part answers the read commands (`help`, `runs`, `status [run]`, `workers`)
in the thread of the message that asked; the acting ones (`enqueue`, `retry`, `cancel`,
`dispatch`) are refused as not available yet. Every command, answered or refused, is
recorded in the state database with who, when, what and the outcome.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control.errors import NotFoundError, UsageError
from control.inventory import Worker
from control.notify.config import Secret
from control.notify.render import slack_escape
from control.state import StateStore

READ = frozenset({"help", "runs", "status", "workers"})
ACT = frozenset({"enqueue", "retry", "cancel", "dispatch"})
_MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")
_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_LIMIT = 3000


@dataclass(frozen=True)
class AgentConfig:
    app_token: Secret
    bot_token: Secret
    read_users: frozenset[str]
    act_users: frozenset[str]
    base_url: str | None = None


def load_agent_config(document: Any, source: str, base: Path | None = None) -> AgentConfig:
    """`superagent_slack_agent` of the inventory: tokens by reference, allow-lists of
    Slack user ids per command class (`act` users may also read)."""
    if not isinstance(document, Mapping):
        raise UsageError(f"{source}: expected a mapping")
    allowed = {"app_token_env", "app_token_file", "bot_token_env", "bot_token_file",
               "allow", "base_url"}  # fmt: skip
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise UsageError(f"{source}.{unknown[0]}: not a Slack agent setting")
    tokens = {name: _token(document, name, source, base) for name in ("app_token", "bot_token")}
    allow = document.get("allow") or {}
    if not isinstance(allow, Mapping) or set(allow) - {"read", "act"}:
        raise UsageError(f"{source}.allow: a mapping with `read` and `act` lists of user ids")
    lists: dict[str, frozenset[str]] = {}
    for name in ("read", "act"):
        users = allow.get(name) or []
        if not isinstance(users, list) or not all(
            isinstance(u, str) and _USER.match(u) for u in users
        ):
            raise UsageError(f"{source}.allow.{name}: a list of Slack user ids (U0123ABCD)")
        lists[name] = frozenset(users)
    base_url = document.get("base_url")
    return AgentConfig(
        tokens["app_token"],
        tokens["bot_token"],
        lists["read"] | lists["act"],
        lists["act"],
        base_url if isinstance(base_url, str) else None,
    )


def _token(document: Mapping[str, Any], name: str, source: str, base: Path | None) -> Secret:
    env, file = document.get(f"{name}_env"), document.get(f"{name}_file")
    if (env is None) == (file is None):
        raise UsageError(f"{source}: set one of {name}_env, {name}_file")
    if env is not None:
        return Secret(env=str(env))
    path = Path(str(file)).expanduser()
    return Secret(file=path if path.is_absolute() or base is None else base / path)


def from_inventory(inventory: Path, workers: Sequence[Worker]) -> AgentConfig:
    values = workers[0].vars if workers else {}
    document = values.get("superagent_slack_agent")
    if document is None:
        raise UsageError(f"{inventory}: no superagent_slack_agent in the inventory's group vars")
    return load_agent_config(document, f"{inventory}: superagent_slack_agent", inventory)


# -- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    outcome: str  # answered, refused, unknown, unavailable
    text: str


def answer(config: AgentConfig, state_path: Path, user: str, text: str) -> Answer:
    """What to reply to `text` from `user`; never raises for what a person typed."""
    words = _MENTION.sub("", text).split()
    command = words[0].lower() if words else "help"
    if command in READ:
        if user not in config.read_users:
            return Answer("refused", f"<@{user}> may not run `{command}` here (not allow-listed)")
        return Answer("answered", _read(state_path, command, words[1:]))
    if command in ACT:
        if user not in config.act_users:
            return Answer("refused", f"<@{user}> may not run `{command}` here (not allow-listed)")
        return Answer("unavailable", f"`{command}` is not available from Slack yet")
    return Answer("unknown", "unknown command; try `help`")


def _read(state_path: Path, command: str, args: list[str]) -> str:
    if command == "help":
        return "commands: `runs`, `status [run]`, `workers`"
    if not state_path.exists():
        return "no state database yet (nothing was dispatched)"
    store = StateStore(state_path)
    try:
        text = {"runs": _runs, "workers": _workers, "status": _status}[command](store, args)
    finally:
        store.close()
    return slack_escape(text)[:_LIMIT]


def _runs(store: StateStore, args: list[str]) -> str:
    rows = store.runs(10)
    lines = [f"{r.id} {store.run_status(r)} {Path(r.spec_path).name}" for r in rows]
    return "\n".join(lines) or "no run yet"


def _workers(store: StateStore, args: list[str]) -> str:
    lines = [
        f"{name}: {row.status}" + (f" ({row.reason[:200]})" if row.reason else "")
        for name, row in sorted(store.workers().items())
    ]
    return "\n".join(lines) or "no worker seen yet"


def _status(store: StateStore, args: list[str]) -> str:
    try:
        run = store.run(args[0]) if args else store.latest_run()
    except NotFoundError:
        return f"no run {args[0]!r}"
    if run is None:
        return "no run yet"
    lines = [f"run {run.id}: {store.run_status(run)}"]
    for phase_id, row in store.phases(run.id).items():
        reason = f" ({row.reason[:200]})" if row.reason else ""
        lines.append(f"- {phase_id}: {row.state} {row.worker or ''}{reason}")
    return "\n".join(lines)


def audit(state_path: Path, user: str, channel: str, command: str, outcome: str) -> None:
    store = StateStore(state_path)
    try:
        with store.write() as conn:
            conn.execute(
                "INSERT INTO slack_audit (at, user, channel, command, outcome) "
                "VALUES (?, ?, ?, ?, ?)",
                (time.time(), user, channel, command, outcome),
            )
    finally:
        store.close()


# -- the app --------------------------------------------------------------------------------


def build(config: AgentConfig, state_path: Path) -> Any:
    """The Socket Mode handler of the slack_bolt app: `connect()` returns at once,
    `close()` ends the session."""
    from slack_bolt import App  # noqa: PLC0415 - only `control slack` loads Slack
    from slack_bolt.adapter.socket_mode import SocketModeHandler  # noqa: PLC0415
    from slack_sdk import WebClient  # noqa: PLC0415

    bot = config.bot_token.value("slack agent bot token")
    options: dict[str, Any] = {"token": bot}
    if config.base_url:
        options["base_url"] = config.base_url
    app = App(client=WebClient(**options))

    def handle(event: Mapping[str, Any], say: Callable[..., Any]) -> None:
        user, text = str(event.get("user") or ""), str(event.get("text") or "")
        reply = answer(config, state_path, user, text)
        audit(state_path, user, str(event.get("channel") or ""), text, reply.outcome)
        say(text=reply.text, thread_ts=event.get("thread_ts") or event.get("ts"))

    @app.event("app_mention")
    def _mention(event: dict[str, Any], say: Callable[..., Any]) -> None:
        handle(event, say)

    @app.event("message")
    def _direct(event: dict[str, Any], say: Callable[..., Any]) -> None:
        direct = event.get("channel_type") == "im"
        if direct and not event.get("bot_id") and not event.get("subtype"):
            handle(event, say)

    return SocketModeHandler(app, config.app_token.value("slack agent app token"))
