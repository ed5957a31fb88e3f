"""The rows the state store hands out: frozen copies, JSON columns already parsed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control.errors import UsageError
from control.messages import IntegrationResult, PhaseResponse


@dataclass(frozen=True)
class PhaseRow:
    """A phase of a run: its state, the attempt it is at, and what it has cost."""

    run_id: str
    phase_id: str
    state: str
    attempt: int
    failures: int
    worker: str | None
    branch: str
    commit_sha: str | None
    not_before: float | None
    reason: str | None
    cost_usd: float
    summary: str | None
    updated_at: float
    losses: int = 0


@dataclass(frozen=True)
class Try:
    """What a phase's attempt and a final check's attempt both are: a message sent under
    an idempotency key to one worker, settled once, a late answer kept apart."""

    run_id: str
    attempt: int
    key: str
    worker: str
    state: str
    created_at: float
    finished_at: float | None
    reason: str | None
    response: Any
    late_response: Any


@dataclass(frozen=True)
class AttemptRow(Try):
    """One try at a phase on one worker, under the idempotency key `run/phase/attempt`."""

    phase_id: str
    message_id: int | None
    dispatched_at: float | None
    cancel_sent: bool
    cancel_owed: bool = False
    push_ref: str | None = None
    reserved_usd: float = 0.0  # taken from the run's budget while in flight
    cost_usd: float | None = None  # once settled; None while in flight
    cost_estimated: bool = False  # no cost came back: its reservation stands for it
    account: str | None = None

    def answer(self) -> PhaseResponse | None:
        """What the attempt's worker answered, parsed (`PhaseResponse`); None when it
        gave no answer, or none that parses."""
        message = self.response
        if not isinstance(message, Mapping) or not isinstance(message.get("response"), Mapping):
            return None
        known = {"key": self.key, "id": self.message_id or 0, "state": self.state}
        try:
            return PhaseResponse.from_message(known | dict(message))
        except UsageError:
            return None


@dataclass(frozen=True)
class IntegrationRow(Try):
    """One try at a run's final check; its task is kept, so a resend is the same message."""

    task: Any

    def answer(self) -> IntegrationResult | None:
        """What the final check's worker answered, parsed (`IntegrationResult`); None when
        it gave no answer, or none that parses (a resolution answers a `PhaseResponse`)."""
        message = self.response if isinstance(self.response, Mapping) else {}
        try:
            return IntegrationResult.from_dict(message.get("response"))
        except UsageError:
            return None


@dataclass(frozen=True)
class ReopenRow:
    """A done phase sent back by the merge queue: after which accepted attempt, because
    of which phase (itself or a prerequisite), found by which check, told what."""

    run_id: str
    phase_id: str
    after_attempt: int
    culprit: str
    check_key: str
    feedback: Any
    created_at: float


@dataclass(frozen=True)
class RunRow:
    """A run: the spec it was created with, its status and who drives it."""

    id: str
    spec_path: str
    spec_hash: str
    spec: Any
    status: str
    created_at: float
    finished_at: float | None
    reason: str | None
    merge_branch: str | None
    merge_commit: str | None
    driver: Any = None
    driver_expires_at: float | None = None
    summary: Any = None  # set when `gc` pruned the run's phases, attempts and events
    pins: Any = None  # {node, claude_code, superagent}: hosts reporting others get no work
    budget_usd: float | None = None  # the run's cap (control.budget); None: no cap

    def spec_phases(self) -> list[dict[str, Any]]:
        """The phases of the spec the run was created with (what a view draws)."""
        phases = self.spec.get("phases", []) if isinstance(self.spec, dict) else []
        return [p for p in phases if isinstance(p, dict)]

    def depends_on(self) -> dict[str, tuple[str, ...]]:
        """Each phase's prerequisites, from the spec the run was created with."""
        return {str(p.get("id")): tuple(p.get("depends_on") or ()) for p in self.spec_phases()}


@dataclass(frozen=True)
class WorkerRow:
    """A worker as the orchestrator last saw it: heartbeat, versions, up or down."""

    name: str
    status: str
    unreachable: int
    last_seen: float | None
    beat_at: float | None
    beat_seen_at: float | None
    beat_status: str | None
    versions: Any
    reason: str | None
    down_since: float | None
    alerted_at: float | None
    drained: Any = None  # {now, reason, since} while the inbox's drain flag is set


@dataclass(frozen=True)
class Pruned:
    """What `StateStore.gc` removed."""

    runs: int
    events: int
    answers: int


def loads(value: str | None) -> Any:
    """A JSON column's value; NULL is None."""
    return None if value is None else json.loads(value)


def _parsed(row: sqlite3.Row, json_columns: tuple[str, ...], flags: tuple[str, ...] = ()) -> Any:
    """A row as keyword arguments: its JSON columns parsed, its 0/1 columns as bools."""
    data = dict(row)
    data.update((name, loads(data[name])) for name in json_columns)
    data.update((name, bool(data[name])) for name in flags)
    return data


def run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(**_parsed(row, ("spec", "driver", "summary", "pins")))


def attempt_row(row: sqlite3.Row) -> AttemptRow:
    parsed = _parsed(row, ("response", "late_response"), ("cancel_sent", "cancel_owed"))
    return AttemptRow(**parsed)


def integration_row(row: sqlite3.Row) -> IntegrationRow:
    return IntegrationRow(**_parsed(row, ("task", "response", "late_response")))


def worker_row(row: sqlite3.Row) -> WorkerRow:
    return WorkerRow(**_parsed(row, ("versions", "drained")))


def reopen_row(row: sqlite3.Row) -> ReopenRow:
    return ReopenRow(**_parsed(row, ("feedback",)))
