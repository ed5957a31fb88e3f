"""Agent accounts: which account runs each dispatch, and where the work goes when one is held.

An account is an agent (claude-code, codex, ...) with a credential that lives on the
hosts allowed to use it (a 0600 file or a systemd credential the worker role installs:
only the account's name ever travels), its own concurrency limit, and its own
rate-limit hold, the reset time its agent reported. `pick` is pure: the orchestrator
gives it the accounts in use and the holds, and gets an account for the phase's agent,
else for its fallback agents, else why it must wait.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from control.errors import UsageError
from control.inventory import Worker

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# The agents an account can be for: the worker's backends that spend a model's money.
ACCOUNT_AGENTS: tuple[str, ...] = ("claude-code", "codex", "gemini", "opencode")
_KEYS = {"name", "agent", "concurrency", "hosts", "credential_var"}


@dataclass(frozen=True)
class Account:
    """One account of one agent CLI, as the scheduler sees it (never its secret)."""

    name: str
    agent: str
    concurrency: int = 1
    hosts: frozenset[str] | None = None  # None: every worker holds its credential
    # The (vaulted) inventory variable the worker role writes the credential from.
    credential_var: str | None = None

    def usable_on(self, host: str) -> bool:
        return self.hosts is None or host in self.hosts

    def hold_name(self) -> str:
        return f"account:{self.name}"


def load_accounts(document: Any, where: str, hosts: Sequence[str] = ()) -> tuple[Account, ...]:
    """The inventory's `superagent_accounts` list, checked whole; UsageError names the
    entry and the field. `hosts` are the inventory's workers, when known."""
    if document is None:
        return ()
    if not isinstance(document, list):
        raise UsageError(f"{where}: superagent_accounts must be a list of accounts")
    accounts: list[Account] = []
    for index, entry in enumerate(document):
        at = f"{where}: superagent_accounts[{index}]"
        account = _account(entry, at, hosts)
        if any(a.name == account.name for a in accounts):
            raise UsageError(f"{at}.name: account {account.name!r} is listed twice")
        accounts.append(account)
    return tuple(accounts)


def _account(entry: Any, at: str, hosts: Sequence[str]) -> Account:
    if not isinstance(entry, Mapping):
        raise UsageError(f"{at}: expected a mapping with name and agent")
    if unknown := sorted(set(entry) - _KEYS):
        known = ", ".join(sorted(_KEYS))
        raise UsageError(f"{at}: unknown field {unknown[0]!r}; known: {known}")
    name, agent = entry.get("name"), entry.get("agent")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"{at}.name: {name!r} is not an account name (lowercase letters, digits, "
            "'-' and '_', starting with a letter or digit)"
        )
    if agent not in ACCOUNT_AGENTS:
        raise UsageError(f"{at}.agent: {agent!r} is not one of {', '.join(ACCOUNT_AGENTS)}")
    concurrency = entry.get("concurrency", 1)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise UsageError(f"{at}.concurrency: must be a whole number of at least 1")
    allowed = entry.get("hosts")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(h, str) for h in allowed):
            raise UsageError(f"{at}.hosts: must be a list of inventory host names")
        if hosts and (strangers := sorted(set(allowed) - set(hosts))):
            raise UsageError(f"{at}.hosts: {strangers[0]!r} is not a worker of the inventory")
    var = entry.get("credential_var")
    if var is not None and (not isinstance(var, str) or not re.fullmatch(r"\w+", var)):
        raise UsageError(f"{at}.credential_var: must name an inventory variable")
    return Account(
        name, str(agent), concurrency, None if allowed is None else frozenset(allowed), var
    )


def from_workers(workers: Sequence[Worker], where: str = "the inventory") -> tuple[Account, ...]:
    """The fleet's accounts: `superagent_accounts` (set for group `all` or `workers`)."""
    document = workers[0].vars.get("superagent_accounts") if workers else None
    return load_accounts(document, where, [w.name for w in workers])


@dataclass(frozen=True)
class Choice:
    """The account (and so the agent) a dispatch runs on."""

    agent: str
    account: Account
    fallback: bool  # not the phase's own agent


def pick(
    agents: Sequence[str],
    host: str,
    accounts: Sequence[Account],
    in_use: Mapping[str, int],
    held_until: Mapping[str, float],
    now: float,
    missing: Collection[str] = (),
) -> Choice | str:
    """A free account for the first agent of `agents` (the phase's, then its fallbacks)
    that has one usable on `host`: not held, under its concurrency, its CLI not among
    the host's `missing` ones. The least busy wins, then the order of the inventory.
    Else the reason the dispatch waits."""
    waits: list[str] = []
    for position, agent in enumerate(agents):
        if agent in missing:
            waits.append(f"{agent}: not installed on {host}")
            continue
        mine = [a for a in accounts if a.agent == agent and a.usable_on(host)]
        if not mine:
            waits.append(f"{agent}: no account usable on {host}")
            continue
        free = [
            a for a in mine
            if held_until.get(a.name, 0.0) <= now and in_use.get(a.name, 0) < a.concurrency
        ]  # fmt: skip
        if free:
            best = min(free, key=lambda a: (in_use.get(a.name, 0) / a.concurrency, mine.index(a)))
            return Choice(agent, best, position > 0)
        held = [a for a in mine if held_until.get(a.name, 0.0) > now]
        parts = [f"{a.name} held until {_clock(held_until[a.name])}" for a in held]
        parts += [f"{a.name} busy" for a in mine if a not in held]
        waits.append(f"{agent}: {', '.join(parts)}")
    return "every account is held or busy (" + "; ".join(waits) + ")"


# Where a worker's heartbeat reports each agent CLI's version (its check's names).
VERSION_KEYS = {"claude-code": "claude_code", "codex": "codex", "gemini": "gemini",
                "opencode": "opencode"}  # fmt: skip


def offers(versions: Mapping[str, Any] | None, agent: str, *, own_credential: bool) -> bool:
    """Whether a worker can run `agent`, by the versions its heartbeat reports: its CLI
    answers there (and, for Claude Code on the worker's own credential, not an account's,
    the worker has a credential). What a worker does not report (an older worker, one
    never heard from, a backend with no CLI such as `command`) is not held against it."""
    found = versions or {}
    key = VERSION_KEYS.get(agent)
    if key is None or key not in found:
        return True
    if not found[key]:
        return False
    no_login = "claude_auth" in found and not found["claude_auth"]
    return not (own_credential and agent == "claude-code" and no_login)


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))
