"""The inbox's wire protocol: one JSON request in, one JSON answer out.

Every transport speaks it: `local` calls `handle` in-process, `ssh` keeps
`control queue rpc` running on the worker and exchanges JSON lines with it,
`ansible` runs the same command once per call with the request on stdin
(base64, so no template engine or shell ever sees the payload's characters).
"""

from __future__ import annotations

import binascii
import json
import sys
from collections.abc import Callable

from control.errors import DrainedError, NotFoundError, SuperagentError, UsageError
from control.queue import Queue

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see main)
if TYPE_CHECKING:
    from typing import Any, TextIO

OPS = ("enqueue", "poll", "ack", "cancel", "log", "ping", "drain", "undrain")
LOG_TAIL_BYTES = 64_000
DEFAULT_POLL_LIMIT = 200


def encode(request: dict[str, Any]) -> str:
    """Request -> base64 text (the `stdin` of an ad-hoc command).

    `binascii` rather than `base64`, here and in `decode`: the same codec without the
    module around it (and the `struct` it imports), which every host's rpc would load."""
    data = json.dumps(request, ensure_ascii=False).encode()
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def decode(text: str) -> Any:
    try:
        return json.loads(binascii.a2b_base64(text.strip(), strict_mode=True))
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"rpc request is not base64-encoded JSON: {exc}") from exc


def serve(queue: Queue, stdin: TextIO, stdout: TextIO, *, base64_request: bool) -> None:
    """Answer one base64 request (ansible), or JSON lines until stdin closes (ssh).

    Answers are ASCII JSON, so neither end depends on the other machine's locale.
    """
    if base64_request:
        stdout.write(json.dumps(handle(queue, decode(stdin.read()))) + "\n")
        return
    for line in stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            answer = {"ok": False, "error": f"invalid JSON request: {exc}", "code": 2}
        else:
            answer = handle(queue, request)
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def main(argv: list[str]) -> int:
    """`control queue rpc` without loading the whole command line (Typer, specs,
    the orchestrator): every ansible call and every ssh connection starts it, so
    its start-up is the transports' floor. Same options, same behaviour (`--help`
    is the full command line's, see control.entry).

    For the same reason its modules (this one, control.db, control.jsontext and the
    queue package) import nothing they can do without: `typing` only for type
    checkers (a `TYPE_CHECKING` of their own; the records are built by `Record`),
    paths through `os.path` rather than `pathlib`, base64 through `binascii`.
    tests/unit/test_ansible_rpc_module.py lists what answering a poll must not load."""
    try:
        db, base64_request = parse_args(argv)
        if db is None:
            from control.paths import default_queue_db  # noqa: PLC0415  pathlib: see control.db

            db = str(default_queue_db())
        with Queue(db, create=False) as queue:
            serve(queue, sys.stdin, sys.stdout, base64_request=base64_request)
    except SuperagentError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return int(exc.exit_code)
    return 0


def parse_args(argv: list[str]) -> tuple[str | None, bool]:
    """`--db PATH` (or `--db=PATH`) and `--base64`, read by hand: argparse and what its
    help formatter imports (shutil, and the compression modules shutil imports) are
    a tenth of the rpc's start-up, paid by every host of every ansible call."""
    db: str | None = None
    base64_request = False
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--base64":
            base64_request = True
        elif arg == "--db" or arg.startswith("--db="):
            value = arg.partition("=")[2] if "=" in arg else (rest.pop(0) if rest else "")
            if not value:
                raise UsageError("control queue rpc: --db needs a path")
            db = value
        else:
            raise UsageError(f"control queue rpc: unknown argument {arg!r} (--db PATH, --base64)")
    return db, base64_request


def handle(queue: Queue, request: Any) -> dict[str, Any]:
    """Answer one request; errors come back as {"ok": false, "error", "code"}."""
    try:
        return {"ok": True, **_route(queue, request)}
    except DrainedError as exc:  # a conflict the caller acts on: said apart
        return {"ok": False, "error": str(exc), "code": int(exc.exit_code), "drained": True}
    except SuperagentError as exc:
        return {"ok": False, "error": str(exc), "code": int(exc.exit_code)}


def _route(queue: Queue, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict) or request.get("op") not in OPS:
        raise UsageError(f"rpc request needs an op, one of {', '.join(OPS)}")
    op = request["op"]
    if op == "ping":
        return {}
    if op == "enqueue":
        sent = queue.enqueue(
            request.get("payload"),
            key=request.get("key"),
            max_attempts=int(request.get("max_attempts", 3)),
            allow_duplicate=bool(request.get("allow_duplicate", False)),
            unless_drained=bool(request.get("unless_drained", False)),
        )
        return {"id": sent.id, "duplicate": sent.duplicate, "state": sent.state}
    if op in _HANDLERS:
        return _HANDLERS[op](queue, request)
    if op == "ack":
        ids = request.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise UsageError("ack needs `ids`, a list of message ids")
        return {"acked": queue.ack(*ids)}
    # cancel
    key = request.get("key")
    if not isinstance(key, str):
        raise UsageError("cancel needs `key`")
    return {"state": queue.cancel(key=key)}


def _texts(request: dict[str, Any], name: str) -> list[str]:
    value = request.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"poll `{name}` must be a list of text")
    return value


def _poll(queue: Queue, request: dict[str, Any]) -> dict[str, Any]:
    """Unacknowledged responses (those under the `first` key prefixes before any
    other), heartbeats, stats, the inbox's state of each of `keys`, and its drain."""
    limit = int(request.get("limit", DEFAULT_POLL_LIMIT))
    first = _texts(request, "first")
    keys = _texts(request, "keys")
    return {
        "responses": [m.to_dict() for m in queue.responses(limit, first=first)] if limit else [],
        "heartbeats": [b.to_dict() for b in queue.heartbeats()],
        "stats": {
            k: v for k, v in queue.stats(live_only=True).to_dict().items() if k != "heartbeats"
        },
        "known": queue.known(keys),
        "now": queue.now(),
        "drain": None if (drain := queue.drained()) is None else drain.to_dict(),
    }


def _log(queue: Queue, request: dict[str, Any]) -> dict[str, Any]:
    """The tail of a message's run log: the path its response names, or, while it runs,
    the one its worker's heartbeat names. Only paths the worker itself recorded."""
    message_id = request.get("id")
    if not isinstance(message_id, int):
        raise UsageError("log needs `id`, a message id")
    limit = int(request.get("tail_bytes", LOG_TAIL_BYTES))
    message = queue.show(message_id)
    path = (message.response or {}).get("log") if isinstance(message.response, dict) else None
    if path is None:
        for beat in queue.heartbeats():
            for current in beat.current:
                if isinstance(current, dict) and current.get("id") == message_id:
                    path = current.get("log")
    if not path:
        raise NotFoundError(f"message {message_id} has no log yet (state {message.state})")
    try:
        with open(path, "rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - limit))
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        raise NotFoundError(f"log {path}: {exc.strerror}") from exc
    return {"path": path, "size": size, "text": text, "state": message.state}


def _drain(queue: Queue, request: dict[str, Any]) -> dict[str, Any]:
    """Set the drain flag: the worker claims nothing new (`now`: and hands back its runs)."""
    reason = request.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise UsageError("drain `reason` must be text")
    return {"drain": queue.drain(now=bool(request.get("now", False)), reason=reason).to_dict()}


def _undrain(queue: Queue, request: dict[str, Any]) -> dict[str, Any]:
    return {"was_drained": queue.undrain()}


_HANDLERS: dict[str, Callable[[Queue, dict[str, Any]], dict[str, Any]]] = {
    "poll": _poll,
    "log": _log,
    "drain": _drain,
    "undrain": _undrain,
}
