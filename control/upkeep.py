"""What any command that reaches the fleet does on the way: deliver the cancels owed
to workers and store the answers to free-form tasks.

`control dispatch` does both every tick; `control health` (and a later run) does
them too, so an abandoned attempt is stopped and an answer is kept even when the
run that owed or awaited them has ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from control.errors import SuperagentError, UsageError
from control.inventory import Worker
from control.messages import PhaseResponse
from control.state import AttemptRow, StateStore
from control.transport import PollResult, Transports

log = logging.getLogger("superagent.upkeep")


def deliver_cancels(
    store: StateStore,
    transports: Transports,
    workers: Mapping[str, Worker],
    results: Mapping[str, PollResult] | None = None,
    on_confirmed: Callable[[AttemptRow, str], None] | None = None,
) -> int:
    """Send every cancel owed to a worker of `workers`, of any run; each stays owed
    until the worker's inbox confirms it (cancelled, flagged for its worker, or
    already over). With `results`, only workers that answered that poll are tried.
    Returns how many were confirmed."""
    confirmed = 0
    for attempt in store.owed_cancels():
        worker = workers.get(attempt.worker)
        if worker is None:
            continue
        if results is not None and not (
            attempt.worker in results and results[attempt.worker].reachable
        ):
            continue
        try:
            state = transports.cancel(worker, attempt.key)
        except SuperagentError as exc:
            log.warning("cancel %s on %s failed: %s", attempt.key, attempt.worker, exc)
            continue
        store.mark_cancel_sent(attempt.key)
        confirmed += 1
        if on_confirmed is not None:
            on_confirmed(attempt, state)
    return confirmed


def collect_answers(
    store: StateStore, transports: Transports, worker: Worker, result: PollResult
) -> int:
    """Store the answers to free-form tasks this state database sent, then acknowledge
    them; others' stay in the inbox. Returns how many were stored."""
    stored = [
        int(message["id"])
        for message in result.responses
        if str(message.get("key") or "").startswith("freeform/")
        and store.store_freeform_response(str(message["key"]), int(message["id"]), message)
    ]
    if stored:
        try:
            transports.ack(worker, stored)
        except SuperagentError as exc:
            log.warning("acknowledging answers on %s failed: %s", worker.name, exc)
    return len(stored)


def free_form_answer(row: Mapping[str, Any]) -> PhaseResponse | None:
    """A stored free-form answer, parsed as any worker's response is; None when there
    is none (or none that parses)."""
    message = row.get("response")
    if not isinstance(message, Mapping):
        return None
    known = {"key": str(row.get("key") or ""), "id": 0, "state": str(row.get("state") or "done")}
    try:
        return PhaseResponse.from_message(known | dict(message))
    except UsageError:
        return None


def answer_text(row: Mapping[str, Any]) -> str:
    """The agent's reply in a stored answer (the response's summary), or ''."""
    answer = free_form_answer(row)
    return "" if answer is None else answer.summary
