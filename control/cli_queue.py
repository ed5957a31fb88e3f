"""`control queue ...`: the inbox from the command line.

These are also the commands the remote transports run on a worker, so each one
takes its JSON on stdin or from `--file` and answers with `--json`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from control import rpc as protocol
from control.cli_io import DbOption, InputOption, JsonOption, console, emit, read_json
from control.cli_view import table
from control.errors import ConflictError, UsageError
from control.queue import SCHEMA_VERSION, STATES, Message, Queue

app = typer.Typer(
    help="The worker inbox (queue.db): enqueue, claim, complete, inspect.",
    no_args_is_help=True,
)

FenceOption = Annotated[int, typer.Option("--fence", help="The fence token from the claim.")]
LeaseOption = Annotated[float, typer.Option("--lease", min=0.001, help="Lease length in seconds.")]


def _open(db: Any, create: bool = False) -> Queue:
    return Queue(db, create=create)


def _age(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _messages_table(messages: list[Message]) -> Table:
    """Six columns, so 80 read well: who holds a message, a cancel asked for and the
    reason share the last one (the long text, wrapping at words)."""
    shown = table("id", "key", "state", "tries", "enqueued", "detail")
    for m in messages:
        detail = []
        if m.state == "claimed" and m.lease_owner:
            detail.append(f"held by {m.lease_owner}")
        if m.cancel_requested:
            detail.append("cancel requested")
        if m.reason:
            detail.append(m.reason)
        shown.add_row(
            str(m.id),
            m.key or "-",
            m.state if m.kind == "task" else f"{m.state} ({m.kind})",
            f"{m.attempts}/{m.max_attempts}",
            _age(m.enqueued_at),
            Text("; ".join(detail)),  # a reason is agent or git text: shown as data
        )
    return shown


@app.command()
def init(db: DbOption, as_json: JsonOption = False) -> None:
    """Create the inbox (or migrate an existing one to this version's schema)."""
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _open(db, create=True) as queue:
        result = {"db": str(queue.path), "schema_version": SCHEMA_VERSION}
    emit(result, as_json, lambda: console.print(f"inbox ready at {result['db']}"))


@app.command()
def enqueue(
    db: DbOption,
    file: InputOption = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key: the same key is stored once.")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="task or cancel.")] = "task",
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, help="Claims before it is dead.")
    ] = 3,
    allow_duplicate: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate", help="Store identical keyless content even within the window."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a message; the payload is JSON on stdin or in --file."""
    payload = read_json(file)
    with _open(db) as queue:
        result = queue.enqueue(
            payload,
            key=key,
            kind=kind,  # type: ignore[arg-type]
            max_attempts=max_attempts,
            allow_duplicate=allow_duplicate,
        )
    data = {"id": result.id, "duplicate": result.duplicate, "state": result.state}

    def render() -> None:
        if result.duplicate:
            console.print(f"duplicate: message {result.id} already holds this ({result.state})")
        else:
            console.print(f"enqueued message {result.id}")

    emit(data, as_json, render)


@app.command()
def claim(
    db: DbOption,
    worker: Annotated[str, typer.Option("--worker", help="This worker's id.")],
    lease: LeaseOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Take the oldest pending task under a lease (prints null when there is none)."""
    with _open(db) as queue:
        claimed = queue.claim(worker, lease)
    data = None if claimed is None else claimed._asdict()

    def render() -> None:
        if claimed is None:
            console.print("nothing to claim")
        else:
            console.print(
                f"claimed message {claimed.id} (fence {claimed.fence}, attempt "
                f"{claimed.attempt}/{claimed.max_attempts})"
            )
            console.print_json(json.dumps(claimed.payload))

    emit(data, as_json, render)


@app.command()
def renew(
    db: DbOption,
    message_id: Annotated[int, typer.Argument(help="Message id.")],
    fence: FenceOption,
    lease: LeaseOption = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Extend a lease; exits 4 when the fence is no longer current."""
    with _open(db) as queue:
        renewed = queue.renew(message_id, fence, lease)
    emit(
        renewed._asdict(),
        as_json,
        lambda: console.print("cancel requested" if renewed.cancel_requested else "lease renewed"),
    )


def _finished(result: Any, message_id: int, fence: int, as_json: bool) -> None:
    if not result.accepted:
        raise ConflictError(
            f"message {message_id}: fence {fence} is stale (current {result.current_fence}, "
            f"state {result.state}); the result was recorded as stale and not applied"
        )
    emit(
        {"accepted": True, "state": result.state},
        as_json,
        lambda: console.print(f"message {message_id} {result.state}"),
    )


@app.command()
def complete(
    db: DbOption,
    message_id: Annotated[int, typer.Argument(help="Message id.")],
    fence: FenceOption,
    file: InputOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store the response (JSON on stdin or --file) as done; exits 4 on a stale fence."""
    response = read_json(file, "response")
    with _open(db) as queue:
        result = queue.complete(message_id, fence, response)
    _finished(result, message_id, fence, as_json)


@app.command()
def fail(
    db: DbOption,
    message_id: Annotated[int, typer.Argument(help="Message id.")],
    fence: FenceOption,
    reason: Annotated[str, typer.Option("--reason", help="Why it failed.")],
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Response JSON file ('-': stdin).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Store a failure with its reason (and a response, when --file is given)."""
    response = read_json(file, "response") if file is not None else None
    with _open(db) as queue:
        result = queue.fail(message_id, fence, reason, response)
    _finished(result, message_id, fence, as_json)


@app.command()
def responses(
    db: DbOption,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Finished messages whose response has not been acknowledged yet."""
    with _open(db) as queue:
        found = queue.responses(limit)
    emit(
        [m.to_dict() for m in found],
        as_json,
        lambda: console.print(_messages_table(found)),
    )


@app.command()
def ack(
    db: DbOption,
    message_ids: Annotated[list[int], typer.Argument(help="Message ids.")],
    as_json: JsonOption = False,
) -> None:
    """Acknowledge responses once they are stored elsewhere (idempotent)."""
    with _open(db) as queue:
        count = queue.ack(*message_ids)
    emit({"acked": count}, as_json, lambda: console.print(f"acknowledged {count}"))


@app.command()
def cancel(
    db: DbOption,
    message_id: Annotated[int | None, typer.Argument(help="Message id.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Cancel by idempotency key.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a message: at once when pending, on its next renew when claimed."""
    with _open(db) as queue:
        state = queue.cancel(message_id, key=key)
    emit({"state": state}, as_json, lambda: console.print(state))


@app.command()
def requeue(
    db: DbOption,
    message_ids: Annotated[list[int] | None, typer.Argument(help="Message ids.")] = None,
    expired: Annotated[
        bool, typer.Option("--expired", help="Put back every message whose lease ran out.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Give failed, dead or cancelled messages new attempts, or sweep expired leases."""
    if not message_ids and not expired:
        raise UsageError("requeue needs message ids or --expired")
    with _open(db) as queue:
        moved = queue.requeue_expired() if expired else 0
        for message_id in message_ids or []:
            queue.requeue(message_id)
            moved += 1
    emit({"requeued": moved}, as_json, lambda: console.print(f"requeued {moved}"))


@app.command("list")
def list_messages(
    db: DbOption,
    only: Annotated[
        str | None,
        typer.Option("--only", metavar="|".join(STATES), help="Only the messages in this state."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Messages in id order."""
    with _open(db) as queue:
        found = queue.messages(only, limit)
    emit([m.to_dict() for m in found], as_json, lambda: console.print(_messages_table(found)))


@app.command()
def show(
    db: DbOption,
    message_id: Annotated[int, typer.Argument(help="Message id.")],
    as_json: JsonOption = False,
) -> None:
    """One message with its payload, response and stale results."""
    with _open(db) as queue:
        message = queue.show(message_id)
        stale = queue.stale_results(message_id)
    data = {**message.to_dict(), "stale_results": stale}
    emit(data, as_json, lambda: console.print_json(json.dumps(data, ensure_ascii=False)))


@app.command()
def stats(db: DbOption, as_json: JsonOption = False) -> None:
    """Counts by state, unacknowledged responses, re-executions, heartbeats."""
    with _open(db) as queue:
        result = queue.stats()

    def render() -> None:
        counts = table("state", "messages")
        for state, count in result.by_state.items():
            counts.add_row(state, str(count))
        console.print(counts)
        oldest = result.oldest_pending_age_s
        console.print(
            f"unacknowledged responses: {result.unacked_responses}   "
            f"stale results: {result.stale_results}   re-executions: {result.reexecutions}   "
            f"oldest pending: {'-' if oldest is None else f'{oldest:.0f}s'}"
        )
        for beat in result.heartbeats:
            console.print(
                f"worker {beat.worker_id}: {beat.status}, beat {_age(beat.beat_at)}"
                + (f", refusing: {beat.reason}" if beat.reason else "")
            )

    emit(result.to_dict(), as_json, render)


@app.command()
def prune(
    db: DbOption,
    older_than_days: Annotated[
        float, typer.Option("--older-than-days", min=0, help="Age of finished messages to drop.")
    ] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Delete finished, acknowledged messages older than N days."""
    with _open(db) as queue:
        removed = queue.prune(older_than_days)
    emit({"pruned": removed}, as_json, lambda: console.print(f"pruned {removed}"))


@app.command()
def rpc(
    db: DbOption,
    base64_request: Annotated[
        bool,
        typer.Option("--base64", help="Read one base64-encoded request from stdin, answer once."),
    ] = False,
) -> None:
    """Serve the transports: JSON requests on stdin, one JSON answer per line.

    Without --base64 it answers line by line until stdin closes (the ssh transport
    keeps it running); with --base64 it answers one request (the ansible transport).
    """
    with _open(db) as queue:
        protocol.serve(queue, sys.stdin, sys.stdout, base64_request=base64_request)
