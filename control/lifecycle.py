"""A machine's life in the fleet after it joined: drained, undrained, removed.

The drain is a flag in the worker's own inbox (set through the inbox protocol), so it
holds across restarts of the worker and of the orchestrator; the state database only
mirrors it for `status` and `workers`. A run keeps the versions it started with (its
pins) until `repin` moves it to the inventory's. Removal writes the host's attempts off as
machine losses (reassigned at once, never counted against a phase) and drops the
cancels it is owed once nothing more can be delivered to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.errors import NotFoundError, SuperagentError
from control.health import fleet_pins
from control.inventory import Worker
from control.state import StateStore
from control.transport import Transports
from control.upkeep import deliver_cancels

log = logging.getLogger("superagent.lifecycle")


def fleet_worker(fleet: Mapping[str, Worker], host: str) -> Worker:
    if host not in fleet:
        raise NotFoundError(f"no worker {host!r} in the inventory ({', '.join(sorted(fleet))})")
    return fleet[host]


def drain(
    worker: Worker,
    transports: Transports,
    store: StateStore | None = None,
    *,
    now: bool = False,
    reason: str | None = None,
) -> dict[str, Any]:
    """Set the drain flag in the worker's inbox (and mirror it in the state database):
    the worker claims nothing new; with `now` it hands back what it runs, and the
    orchestrator reassigns those phases at once as machine losses."""
    flag = dict(transports.drain(worker, now=now, reason=reason))
    if store is not None:
        store.update_worker(worker.name, drained=flag)
    return flag


def undrain(worker: Worker, transports: Transports, store: StateStore | None = None) -> bool:
    """Clear the drain flag; whether it was set."""
    was = transports.undrain(worker)
    if store is not None and store.workers().get(worker.name) is not None:
        store.update_worker(worker.name, drained=None)
    return was


@dataclass
class Removal:
    """What `remove` did to one host."""

    host: str
    drained: bool = False
    unreachable: str | None = None
    reassigned: list[str] = field(default_factory=list)  # run/phase of each attempt written off
    cancels_delivered: int = 0
    cancels_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def remove(
    host: str,
    fleet: Mapping[str, Worker],
    transports: Transports,
    store: StateStore,
    *,
    clock_now: float,
) -> Removal:
    """Take `host` out of the fleet: drain it `--now` when it is in the inventory and
    answers; write off its attempts in every open run (the phases wait for another
    worker at once: a machine loss); deliver what cancels can still be delivered, then
    drop the rest; forget its row. The inventory entry is the caller's to delete."""
    removal = Removal(host)
    worker = fleet.get(host)
    if worker is not None:
        try:
            drain(worker, transports, store, now=True, reason="being removed from the fleet")
            removal.drained = True
        except SuperagentError as exc:
            removal.unreachable = str(exc)
    for attempt in store.in_flight_on(host):
        if store.settle_attempt(
            attempt,
            attempt_state="abandoned",
            phase_state="waiting",
            reason=f"worker {host} was removed from the fleet",
            count_loss=True,
            owe_cancel=removal.drained,
            not_before=clock_now,
            event="phase_lost",
        ):
            removal.reassigned.append(f"{attempt.run_id}/{attempt.phase_id}")
    if removal.drained and worker is not None:
        removal.cancels_delivered = deliver_cancels(store, transports, {host: worker})
    removal.cancels_dropped = store.drop_owed_cancels(
        host, f"worker {host} was removed from the fleet"
    )
    store.forget_worker(host)
    log.info("removed %s: %s", host, removal.to_dict())
    return removal


def repin(store: StateStore, run_id: str, workers: Sequence[Worker]) -> dict[str, str]:
    """Move a run to the versions the inventory pins now (after an upgrade under it):
    the hosts reporting them take its work again. Returns the new pins."""
    pins = fleet_pins(workers)
    store.set_pins(run_id, pins)
    return pins


def repin_running(store: StateStore, workers: Sequence[Worker]) -> dict[str, dict[str, str]]:
    """After a whole fleet was upgraded, move every unfinished run whose pins differ to
    the inventory's (no host reports its old ones any more: it would wait for ever).
    Returns the runs moved, with their new pins."""
    pins = fleet_pins(workers)
    moved: dict[str, dict[str, str]] = {}
    for run in store.running_runs():
        if run.pins is not None and run.pins != pins:  # None: a run that checks no pins
            store.set_pins(run.id, pins)
            moved[run.id] = pins
    return moved


def gone_hosts(store: StateStore, fleet: Mapping[str, Worker]) -> list[str]:
    """Hosts the state database holds something about that the inventory no longer has:
    `control remove HOST` clears each."""
    return sorted(store.hosts_with_state() - set(fleet))
