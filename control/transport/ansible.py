"""The ansible transport: each call is one ad-hoc `command` run against the inventory.

The worker runs `control queue rpc --base64` with the request on its stdin; a poll
of the whole fleet is one ansible-runner invocation whatever the number of hosts.
The payload is base64 and marked `!unsafe`: no shell and no template engine sees it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from control import rpc
from control.errors import SuperagentError
from control.inventory import Worker
from control.transport.base import (
    InboxCalls,
    PollResult,
    TransportError,
    poll_result,
    rpc_argv,
    unwrap,
)
from control.transport.runner import AdHocRunner, HostOutcome

INVENTORY_ENV = "SUPERAGENT_INVENTORY"
_DATA = "__superagent_rpc"
# Ours, fixed: the only templates Ansible evaluates. They pick this host's argv and
# the request out of the extra vars, where every string is `!unsafe`.
_ARGS = {
    "argv": "{{ __superagent_rpc.argv[inventory_hostname] }}",
    "stdin": "{{ __superagent_rpc.stdin }}",
    "expand_argument_vars": False,  # `$HOME` in a path stays `$HOME`
}


class AnsibleTransport(InboxCalls):
    """Ad-hoc `ansible.builtin.command` calls through the one ansible-runner wrapper.

    `inventory` is the inventory directory the workers were loaded from (or
    $SUPERAGENT_INVENTORY); without one, an inventory is written from each
    worker's own variables for the call.
    """

    name = "ansible"

    def __init__(
        self, inventory: str | Path | None = None, *, runner: AdHocRunner | None = None
    ) -> None:
        source = inventory or os.environ.get(INVENTORY_ENV)
        self.inventory = Path(source).absolute() if source else None
        self.runner = runner or AdHocRunner()

    def _inventory(self, workers: Sequence[Worker]) -> Path | dict[str, Any]:
        if self.inventory is not None:
            return self.inventory
        return {"all": {"hosts": {w.name: dict(w.vars) for w in workers}}}

    def _call(
        self, workers: Sequence[Worker], request: dict[str, Any]
    ) -> dict[str, dict[str, Any] | str]:
        """The protocol answer of each worker, or the reason it has none (a string)."""
        answers: dict[str, dict[str, Any] | str] = {}
        argv: dict[str, list[str]] = {}
        for worker in workers:
            try:
                argv[worker.name] = [*rpc_argv(worker), "--base64"]
            except SuperagentError as exc:
                answers[worker.name] = str(exc)
        if not argv:
            return answers
        result = self.runner.run(
            inventory=self._inventory([w for w in workers if w.name in argv]),
            hosts=list(argv),
            module="ansible.builtin.command",
            args=_ARGS,
            data={_DATA: {"argv": argv, "stdin": rpc.encode(request)}},
        )
        for host, outcome in result.hosts.items():
            answers[host] = _answer(outcome)
        return answers

    def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        answer = self._call([worker], request)[worker.name]
        if isinstance(answer, str):
            raise TransportError(f"{worker.name}: {answer}")
        return unwrap(worker.name, answer)

    def poll_request(
        self, workers: Sequence[Worker], request: dict[str, Any]
    ) -> dict[str, PollResult]:
        """One ansible-runner invocation for all `workers`."""
        results: dict[str, PollResult] = {}
        for name, answer in self._call(workers, request).items():
            if isinstance(answer, str):
                results[name] = PollResult(name, False, error=f"{name}: {answer}")
                continue
            try:
                results[name] = poll_result(name, unwrap(name, answer))
            except SuperagentError as exc:
                results[name] = PollResult(name, False, error=str(exc))
        return results

    def close(self) -> None:
        """Nothing stays open: the SSH control sockets expire by ControlPersist."""


def _answer(outcome: HostOutcome) -> dict[str, Any] | str:
    if not outcome.ok:
        return outcome.error()
    if "stdout" not in outcome.result:
        return "the result has no stdout (did ansible-runner drop it for its size?)"
    stdout = str(outcome.result.get("stdout") or "").strip()
    lines = stdout.splitlines()
    try:
        answer = json.loads(lines[-1] if lines else stdout)
    except ValueError:
        return f"not a protocol answer: {stdout[:200]!r}"
    if not isinstance(answer, Mapping):
        return f"not a protocol answer: {stdout[:200]!r}"
    return dict(answer)
