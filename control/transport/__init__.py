"""Transports carry the inbox protocol to workers: local, ssh (paramiko), ansible.

The inventory chooses per host (`superagent_transport`); `Transports` holds one
instance of each kind in use and routes every call to the worker's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Unpack

from control.errors import UsageError, missing_extra
from control.inventory import Worker
from control.queue import Enqueued
from control.transport.base import PollOptions, PollResult, Transport, TransportError
from control.transport.local import LocalTransport

__all__ = ["PollResult", "Transport", "TransportError", "Transports"]


def _factory(kind: str, inventory: Path | None) -> Callable[[], Transport]:
    if kind == "local":
        return LocalTransport
    try:
        if kind == "ssh":
            from control.transport.ssh import SshTransport  # noqa: PLC0415  paramiko loads slowly

            return SshTransport
        if kind == "ansible":
            from control.transport.ansible import AnsibleTransport  # noqa: PLC0415  ansible too

            return lambda: AnsibleTransport(inventory)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, f"the {kind} transport") from exc
    raise UsageError(f"unknown transport {kind!r}")


class Transports:
    """Routes each call to the transport the worker's inventory entry names."""

    def __init__(
        self,
        factories: dict[str, Callable[[], Transport]] | None = None,
        *,
        inventory: Path | None = None,
    ) -> None:
        self._factories = factories or {}
        self._inventory = inventory  # the ansible transport runs against it
        self._open: dict[str, Transport] = {}

    def for_kind(self, kind: str) -> Transport:
        if kind not in self._open:
            factory = self._factories.get(kind) or _factory(kind, self._inventory)
            self._open[kind] = factory()
        return self._open[kind]

    def of(self, worker: Worker) -> Transport:
        return self.for_kind(worker.transport)

    def enqueue(
        self,
        worker: Worker,
        payload: Any,
        *,
        key: str,
        max_attempts: int = 3,
        unless_drained: bool = False,
    ) -> Enqueued:
        return self.of(worker).enqueue(
            worker, payload, key=key, max_attempts=max_attempts, unless_drained=unless_drained
        )

    def poll(
        self, workers: Sequence[Worker], **options: Unpack[PollOptions]
    ) -> dict[str, PollResult]:
        """One fan-out per transport kind, whatever the number of hosts."""
        results: dict[str, PollResult] = {}
        by_kind: dict[str, list[Worker]] = {}
        for worker in workers:
            by_kind.setdefault(worker.transport, []).append(worker)
        for kind, group in by_kind.items():
            results.update(self.for_kind(kind).poll(group, **options))
        return results

    def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        return self.of(worker).call(worker, request)

    def ack(self, worker: Worker, ids: Sequence[int]) -> int:
        return self.of(worker).ack(worker, ids) if ids else 0

    def cancel(self, worker: Worker, key: str) -> str:
        return self.of(worker).cancel(worker, key)

    def drain(self, worker: Worker, *, now: bool = False, reason: str | None = None) -> Any:
        return self.of(worker).drain(worker, now=now, reason=reason)

    def undrain(self, worker: Worker) -> bool:
        return self.of(worker).undrain(worker)

    def close(self) -> None:
        for transport in self._open.values():
            transport.close()
        self._open.clear()
