"""What the Slack agent does with a message: who may run which command, the answer to a
reading command, and an acting command held until its asker confirms it with a button.

Slack is only the way in: nothing here knows of slack_bolt. Text that came from a
person or an agent is escaped before it is echoed (no `<!channel>`, no forged link);
a free-form task reaches the inbox exactly as it was typed. Every command, every
click on a button, answered or refused, is recorded in the state database.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control import operations
from control.errors import SuperagentError
from control.inventory import Worker
from control.notify.render import slack_escape
from control.slack_config import AgentConfig
from control.spec import load_spec
from control.state import RunRow, StateStore
from control.transport import Transports
from control.upkeep import answer_text, free_form_answer

READ = ("help", "runs", "status", "workers", "health")
ACT = ("enqueue", "retry", "cancel", "dispatch")
CONFIRM_TTL_S = 600.0  # a confirmation button older than this does nothing
# Slack retries a delivery it thinks failed three times, the last about five minutes
# after the first: a day of keys is ample, and small.
SEEN_TTL_S = 86_400.0
_MENTION = re.compile(r"^\s*<@[A-Z0-9]+>\s*")
_RUN = re.compile(r"^r\d{8}-\d{6}-[0-9a-f]{4}$")
_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LIMIT = 3000
HELP = (
    "read: `runs`, `status [run]`, `workers`, `health`\n"
    "act (asks for confirmation): `enqueue <worker> <task>`, `retry <phase>... [run]`, "
    "`cancel <phase>... [run]` or `cancel <run>`, `dispatch <spec>`"
)

Post = Callable[[str, str, str], None]  # (channel, thread, text): an answer that comes later


@dataclass(frozen=True)
class Reply:
    """`outcome`: answered, refused, unknown, confirm (`token` names the pending
    command; the reply carries the buttons), done, failed, aborted."""

    outcome: str
    text: str
    token: str | None = None


def unescape(text: str) -> str:
    """Slack sends &, < and > in what a person typed as entities (its docs say so)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _refusal(user: str, command: str) -> Reply:
    return Reply("refused", f"<@{user}> may not run `{command}` here (not allow-listed)")


class Commands:
    """The commands, against one state database and one inventory's fleet."""

    def __init__(
        self,
        config: AgentConfig,
        state: Path,
        inventory: Path | None,
        workers: Sequence[Worker],
        post: Post | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state = state
        self.inventory = inventory
        self.fleet = {w.name: w for w in workers}
        self.post = post or (lambda channel, thread, text: None)
        self.clock = clock

    # -- a message ------------------------------------------------------------------------

    def handle(self, user: str, channel: str, thread: str, text: str) -> Reply:
        """The reply to `text` from `user`, recorded; never raises for what was typed."""
        try:
            reply = self._handle(user, channel, thread, text)
        except SuperagentError as exc:
            reply = Reply("failed", slack_escape(" ".join(str(exc).split()))[:_LIMIT])
        self.audit(user, channel, text, reply.outcome)
        return reply

    def _handle(self, user: str, channel: str, thread: str, text: str) -> Reply:
        body = _MENTION.sub("", text)
        words = body.split()
        command = words[0].lower() if words else "help"
        if command in READ:
            if user not in self.config.read_users:
                return _refusal(user, command)
            return Reply("answered", slack_escape(self._read(command, words[1:]))[:_LIMIT])
        if command in ACT:
            if user not in self.config.act_users:
                return _refusal(user, command)
            what = self._check(command, words[1:], body)
            token = self._hold(user, channel, thread, body)
            return Reply(
                "confirm",
                f"<@{user}> asked to {slack_escape(what)}. Only they can confirm, within "
                f"{CONFIRM_TTL_S / 60:.0f} minutes.",
                token,
            )
        return Reply("unknown", "unknown command; try `help`")

    # -- reading --------------------------------------------------------------------------

    def _read(self, command: str, args: list[str]) -> str:
        if command == "help":
            return HELP
        if command == "health":
            return self._health()
        if not self.state.exists():
            return "no state database yet (nothing was dispatched)"
        store = StateStore(self.state)
        try:
            if command == "runs":
                rows = store.runs(10)
                lines = [f"{r.id} {store.run_status(r)} {Path(r.spec_path).name}" for r in rows]
                return "\n".join(lines) or "no run yet"
            if command == "workers":
                return (
                    "\n".join(
                        f"{name}: {row.status}" + (f" ({row.reason[:200]})" if row.reason else "")
                        for name, row in sorted(store.workers().items())
                    )
                    or "no worker seen yet"
                )
            return _status(store, args)
        finally:
            store.close()

    def _health(self) -> str:
        if not self.fleet:
            return "no worker in the inventory"
        transports = Transports(inventory=self.inventory)
        try:
            found = operations.fleet_health(list(self.fleet.values()), transports, self.state)
        finally:
            transports.close()
        lines = [
            f"{r['worker']}: " + ("; ".join(p[:200] for p in r["problems"]) or "ok")
            for r in found.reports
        ]
        lines += [f"{host}: state left, no longer in the inventory" for host in found.gone]
        return ("healthy\n" if found.healthy else "NOT healthy\n") + "\n".join(lines)

    # -- acting: checked, held, confirmed, done ------------------------------------------

    def _check(self, command: str, args: list[str], body: str) -> str:
        """What the command will do, in words; refused now if it cannot be done."""
        if command == "enqueue":
            host, task = _freeform(body)
            if host not in self.fleet:
                raise SuperagentError(f"no worker {host!r} in the inventory")
            return f"send {host} a free-form task of {len(task)} characters"
        if command == "dispatch":
            spec = load_spec(self._spec(args), list(self.fleet.values()))
            count = len(spec.phases)
            return f"dispatch {self._spec(args).name} ({count} phase{'s' * (count != 1)})"
        run_id, phases = _run_and_phases(args)
        if not phases and (command == "retry" or run_id is None):
            raise SuperagentError(
                f"`{command}` needs phase names" + (" or a run" * (command == "cancel"))
            )
        store = self._store()
        try:
            run = _pick(store, run_id)
            if phases:
                store.named_phases(run.id, phases)
        finally:
            store.close()
        what = ", ".join(phases) if phases else "the whole run"
        return f"{command} {what} of run {run.id}"

    def _spec(self, args: list[str]) -> Path:
        if self.config.specs_dir is None:
            raise SuperagentError("dispatching from Slack is off (no specs_dir in the settings)")
        if len(args) != 1 or not _SPEC.match(args[0]):
            raise SuperagentError("`dispatch` takes one spec name from the specs directory")
        root = self.config.specs_dir.resolve()
        path = (root / args[0]).resolve()
        if path.parent != root or not path.is_file():
            raise SuperagentError(f"no spec {args[0]!r} in the specs directory")
        return path

    def _store(self) -> StateStore:
        if not self.state.exists():
            raise SuperagentError("no state database yet (nothing was dispatched)")
        return StateStore(self.state)

    def _hold(self, user: str, channel: str, thread: str, command: str) -> str:
        token = secrets.token_urlsafe(18)
        self._record(
            "INSERT INTO slack_pending (token, user, channel, thread, command, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (token, user, channel, thread, command, self.clock()),
        )
        return token

    def decide(self, user: str, channel: str, token: str, confirmed: bool) -> Reply:
        """A click on a confirmation button: only the asker, still allow-listed, once,
        within `CONFIRM_TTL_S`; then the command runs. Recorded whatever happens."""
        command = "?"
        try:
            command, reply = self._decide(user, token, confirmed)
        except SuperagentError as exc:
            reply = Reply("failed", slack_escape(" ".join(str(exc).split()))[:_LIMIT])
        verb = "confirm" if confirmed else "abort"
        self.audit(user, channel, f"[{verb}] {command}", reply.outcome)
        return reply

    def _decide(self, user: str, token: str, confirmed: bool) -> tuple[str, Reply]:
        store = StateStore(self.state)
        try:
            row = store.conn.execute(
                "SELECT * FROM slack_pending WHERE token = ?", (token,)
            ).fetchone()
            if row is None:
                return "?", Reply("refused", "no such confirmation (nothing was done)")
            command = str(row["command"])
            refusal = self._refusal(row, user)
            if refusal is not None:
                return command, refusal
            with store.write() as conn:
                claimed = conn.execute(
                    "UPDATE slack_pending SET state = ?, decided_at = ? "
                    "WHERE token = ? AND state = 'pending' RETURNING token",
                    ("confirmed" if confirmed else "aborted", self.clock(), token),
                ).fetchone()
            if claimed is None:  # another click won
                return command, Reply("refused", "this was decided already")
            channel, thread = str(row["channel"]), str(row["thread"])
        finally:
            store.close()
        if not confirmed:
            return command, Reply("aborted", "nothing done")
        return command, self._act(command, channel, thread)

    def _refusal(self, row: Mapping[str, Any], user: str) -> Reply | None:
        if row["user"] != user:
            return Reply("refused", f"only <@{row['user']}> can confirm this")
        if user not in self.config.act_users:
            return _refusal(user, str(row["command"]).split()[0].lower())
        if row["state"] != "pending":
            return Reply("refused", f"this was {row['state']} already")
        if self.clock() - float(row["created_at"]) > CONFIRM_TTL_S:
            return Reply("refused", "this confirmation expired; ask again")
        return None

    def _act(self, body: str, channel: str, thread: str) -> Reply:
        words = body.split()
        command, args = words[0].lower(), words[1:]
        if command == "dispatch":
            return self._dispatch(self._spec(args), channel, thread)
        store = self._store()
        transports = Transports(inventory=self.inventory)
        try:
            if command == "enqueue":
                host, task = _freeform(body)
                sent = operations.send_freeform(
                    store, transports, self.fleet, host, task,
                    reply_to={"channel": channel, "thread": thread},
                )  # fmt: skip
                return Reply("done", f"sent to {host} as message {sent.id}; its answer comes here")
            run_id, phases = _run_and_phases(args)
            run = _pick(store, run_id)
            if command == "retry":
                store.retry_phases(run.id, phases, "retry requested from Slack")
                return Reply(
                    "done",
                    slack_escape(f"{', '.join(phases)} of run {run.id} will run again "
                                 "(when its `control dispatch` resumes it)"),
                )  # fmt: skip
            done = operations.cancel(
                store, transports, self.fleet, run, phases, "cancelled from Slack"
            )
            later = " (the others' agents are stopped when their workers are reached)"
            return Reply(
                "done",
                slack_escape(
                    f"cancelled {', '.join(done.cancelled) or 'nothing'} of run {run.id}; "
                    f"{len(done.stopped)} agent(s) stopped" + (later if done.unstopped else "")
                ),
            )
        finally:
            transports.close()
            store.close()

    def _dispatch(self, spec: Path, channel: str, thread: str) -> Reply:
        from control.slack_dispatch import start  # noqa: PLC0415 - a process of its own

        start(self, spec, channel, thread)
        return Reply("done", slack_escape(f"dispatching {spec.name}; the run's news comes here"))

    # -- answers that come later ----------------------------------------------------------

    def deliver_answers(self) -> int:
        """Post the answers to free-form tasks sent from Slack, each once, in the thread
        of its task; ask the worker for those not stored yet. Returns how many."""
        if not self.state.exists():
            return 0
        store = StateStore(self.state)
        transports = Transports(inventory=self.inventory)
        posted = 0
        try:
            waiting = store.unreplied_answers()
            for host in sorted({r["worker"] for r in waiting if r["state"] != "answered"}):
                if host in self.fleet:
                    operations.collect_answer(store, transports, self.fleet[host])
            for row in store.unreplied_answers():
                if row["state"] != "answered":
                    continue
                where = row["reply_to"] or {}
                text = answer_text(row) or "(the agent gave no summary)"
                answer = free_form_answer(row)
                status = "?" if answer is None else answer.status
                self.post(
                    str(where.get("channel")),
                    str(where.get("thread")),
                    slack_escape(f"answer from {row['worker']} ({status}):\n{text}")[:_LIMIT],
                )
                store.mark_replied(row["key"])
                posted += 1
        finally:
            transports.close()
            store.close()
        return posted

    def first_delivery(self, key: str) -> bool:
        """Whether Slack delivers `key` (what names a delivery across its retries) for the
        first time; recorded in the state database, so a retry after a restart is known
        too. Claimed before anything is done: a delivery that dies half-way is not run
        again by Slack's retry (a person can ask again; an act done twice cannot be undone)."""
        now = self.clock()
        store = StateStore(self.state)
        try:
            with store.write() as conn:
                conn.execute("DELETE FROM slack_seen WHERE seen_at < ?", (now - SEEN_TTL_S,))
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO slack_seen (key, seen_at) VALUES (?, ?)", (key, now)
                )
                return bool(claimed.rowcount == 1)
        finally:
            store.close()

    def audit(self, user: str, channel: str, command: str, outcome: str) -> None:
        self._record(
            "INSERT INTO slack_audit (at, user, channel, command, outcome) VALUES (?, ?, ?, ?, ?)",
            (self.clock(), user, channel, command, outcome),
        )

    def _record(self, sql: str, values: tuple[Any, ...]) -> None:
        store = StateStore(self.state)
        try:
            with store.write() as conn:
                conn.execute(sql, values)
        finally:
            store.close()


def _freeform(body: str) -> tuple[str, str]:
    """`enqueue <worker> <task>`: the task is everything after the worker's name and
    the one space or line break that ends it, as the person typed it."""
    match = re.match(r"\s*\S+[ \t\n]+?(\S+)[ \t\n](.*)\Z", body, re.DOTALL)
    if match is None or not match.group(2).strip():
        raise SuperagentError("`enqueue` takes a worker and a task: enqueue <worker> <task>")
    return match.group(1), unescape(match.group(2))


def _run_and_phases(args: list[str]) -> tuple[str | None, list[str]]:
    runs = [a for a in args if _RUN.match(a)]
    if len(runs) > 1:
        raise SuperagentError("name one run at most")
    return (runs[0] if runs else None), [a for a in args if not _RUN.match(a)]


def _pick(store: StateStore, run_id: str | None) -> RunRow:
    if run_id is not None:
        return store.run(run_id)
    latest = store.latest_run()
    if latest is None:
        raise SuperagentError("no run yet")
    return latest


def _status(store: StateStore, args: list[str]) -> str:
    try:
        run = _pick(store, args[0] if args else None)
    except SuperagentError:
        return f"no run {args[0]!r}" if args else "no run yet"
    lines = [f"run {run.id}: {store.run_status(run)}"]
    for phase_id, row in store.phases(run.id).items():
        reason = f" ({row.reason[:200]})" if row.reason else ""
        lines.append(f"- {phase_id}: {row.state} {row.worker or ''}{reason}")
    return "\n".join(lines)
