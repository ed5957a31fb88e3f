"""The ansible transport: each call is one ad-hoc `control_queue_rpc` against the inventory.

The worker runs `control queue rpc --base64` with the request on its stdin; a poll
of the whole fleet is one ansible-runner invocation whatever the number of hosts.
The payload is base64 and marked `!unsafe`: no shell and no template engine sees it.
`control_queue_rpc` (ansible_library/) is a module without Ansible's module_utils: the
worker's Python starts, runs the rpc and answers, a fraction of `command`'s cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from control import rpc
from control.errors import SuperagentError
from control.inventory import Worker, spells_older_names, ssh_address, with_current_names
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
}
MODULE = "control_queue_rpc"
# Ours too: a worker behind NAT is reached through its reverse tunnel (the address
# control.inventory derives), whatever ansible_host says (its LAN, for the first
# provisioning). Extra vars apply to every host of a call, so they pick the tunnel's
# address for the hosts in `address` and leave every other host where its inventory
# puts it; they set the `ssh` spellings, which Ansible prefers over ansible_host and
# ansible_port, so for the other hosts those two are still read. A host whose
# inventory spells its address the `ssh` way (which these extra vars hide) has it
# passed in `address` too. A mixed poll stays one call.
_TUNNELLED = f"inventory_hostname in {_DATA}.address"
_THROUGH_TUNNEL = {
    "ansible_ssh_host": (
        f"{{{{ {_DATA}.address[inventory_hostname][0] if {_TUNNELLED} "
        "else ansible_host | default(inventory_hostname) }}"
    ),
    "ansible_ssh_port": (
        f"{{{{ {_DATA}.address[inventory_hostname][1] if {_TUNNELLED} "
        "else ansible_port | default(None) }}"
    ),
}


class AnsibleTransport(InboxCalls):
    """Ad-hoc `control_queue_rpc` calls through the one ansible-runner wrapper.

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
        address: dict[str, list[Any]] = {}  # where the call's extra vars send a host
        for worker in workers:
            try:
                argv[worker.name] = [*rpc_argv(worker), "--base64"]
                if worker.reach == "reverse-tunnel":
                    address[worker.name] = list(ssh_address(worker))
            except SuperagentError as exc:
                argv.pop(worker.name, None)
                answers[worker.name] = str(exc)
        ready = [w for w in workers if w.name in argv]
        if not ready:
            return answers
        if address:  # the tunnel's extra vars hide the older spellings: pass what they say
            for worker in ready:
                if worker.name not in address and spells_older_names(worker):
                    values = with_current_names(worker.vars)
                    address[worker.name] = [
                        values.get("ansible_host") or worker.name,
                        values.get("ansible_port"),
                    ]
        data: dict[str, Any] = {
            "argv": {w.name: argv[w.name] for w in ready},
            "stdin": rpc.encode(request),
        }
        if address:
            data["address"] = address
        result = self.runner.run(
            inventory=self._inventory(ready),
            hosts=[w.name for w in ready],
            module=MODULE,
            args=_ARGS,
            data={_DATA: data},
            templates=_THROUGH_TUNNEL if address else None,
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
    if "answer" not in outcome.result:
        return "the result has no answer (did ansible-runner drop it for its size?)"
    stdout = str(outcome.result.get("answer") or "").strip()
    lines = stdout.splitlines()
    try:
        answer = json.loads(lines[-1] if lines else stdout)
    except ValueError:
        return f"not a protocol answer: {stdout[:200]!r}"
    if not isinstance(answer, Mapping):
        return f"not a protocol answer: {stdout[:200]!r}"
    return dict(answer)
