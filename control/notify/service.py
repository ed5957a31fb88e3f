"""Delivery: one thread per sink, each with its own connection to the state database,
routing new events into the outbox and sending what is due, grouped.

Nothing here runs inside the orchestrator's tick: the tick only writes events (as it
always did); a sink that hangs or is down only delays its own thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from control.errors import SuperagentError
from control.inventory import Worker
from control.notify.config import NotifyConfig, SinkConfig, from_inventory
from control.notify.outbox import Notice, Outbox
from control.notify.sinks import DeliveryError, Sink, build, redact
from control.state import StateStore

log = logging.getLogger("superagent.notify")


class SinkWorker:
    """Route and deliver for one sink; `step` is one round, `run` loops until stopped."""

    def __init__(
        self,
        state_path: Path,
        sink: Sink,
        *,
        interval_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.config: SinkConfig = sink.config
        self.state_path = state_path
        self.interval_s = interval_s
        self.clock = clock
        self.last_sent = float("-inf")
        self.sent_messages = 0
        self.stop = threading.Event()
        self.flush_until = 0.0  # while stopping: send what is due at once, until then
        self.thread: threading.Thread | None = None
        self.secrets: list[str] = list(getattr(sink, "secrets", []))

    def step(self, outbox: Outbox, *, flush: bool = False) -> int:
        """Route new events, then send what is due as grouped messages. Returns how
        many notices were delivered."""
        outbox.route(self.config)
        due = outbox.due(self.config.name)
        if not due:
            return 0
        now = self.clock()
        if not flush:
            if now - min(n.created_at for n in due) < self.config.group_s:
                return 0  # a burst may still be coming: wait to send it as one message
            if now - self.last_sent < self.config.min_interval_s:
                return 0
        delivered = 0
        for group in _groups(self.sink, due):
            self.last_sent = self.clock()
            try:
                self.sink.send(group, outbox.store)
            except DeliveryError as exc:
                delay = outbox.failed(group, str(exc))
                log.warning(
                    "sink %s: %d notice(s) not delivered (%s); retry in %.0fs",
                    self.config.name,
                    len(group),
                    exc,
                    delay,
                )
                continue
            outbox.delivered(group)
            self.sent_messages += 1
            delivered += len(group)
        return delivered

    def run(self) -> None:
        store = StateStore(self.state_path)
        outbox = Outbox(store)
        try:
            while True:
                flushing = self.stop.is_set()
                if flushing and time.monotonic() > self.flush_until:
                    return
                try:
                    sent = self.step(outbox, flush=flushing)
                except (SuperagentError, OSError, sqlite3.Error) as exc:
                    log.warning("sink %s: %s", self.config.name, redact(str(exc), self.secrets))
                    sent = 0
                if flushing and not sent and not outbox.due(self.config.name):
                    return
                if not flushing:
                    self.stop.wait(self.interval_s)
        finally:
            store.close()

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.run, name=f"notify-{self.config.name}", daemon=True
        )
        self.thread.start()


class Notifier:
    """Every sink of a configuration, delivering in the background."""

    @classmethod
    def for_fleet(
        cls, inventory: Path, workers: Sequence[Worker], state_path: Path
    ) -> Notifier | None:
        """The fleet's notifier, or None when the inventory configures no sink."""
        config = from_inventory(inventory, workers)
        return cls(state_path, config) if config.sinks else None

    def __init__(
        self,
        state_path: Path,
        config: NotifyConfig,
        *,
        interval_s: float = 0.05,
        sinks: Sequence[Sink] | None = None,
    ) -> None:
        built = list(sinks) if sinks is not None else [build(s) for s in config.sinks]
        self.workers = [SinkWorker(state_path, s, interval_s=interval_s) for s in built]
        # A sink new to this database starts at the end of the stream as it is now,
        # before the run about to start writes anything: it hears that run whole.
        # What an earlier process left waiting is tried at once: the sink may have come
        # back while nothing ran.
        store = StateStore(state_path)
        try:
            for worker in self.workers:
                Outbox(store).route(worker.config)
            Outbox(store).retry_now()
        finally:
            store.close()

    def start(self) -> Notifier:
        for worker in self.workers:
            worker.start()
        return self

    def stop(self, flush_s: float = 5.0) -> None:
        """Send what is due now (at most `flush_s`), then stop; the rest waits in the
        outbox for the next `control dispatch` or `control notify`."""
        deadline = time.monotonic() + flush_s
        for worker in self.workers:
            worker.flush_until = deadline
            worker.stop.set()
        for worker in self.workers:
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def run_once(self) -> int:
        """Route and send everything due now, in this thread (`control notify --once`)."""
        delivered = 0
        for worker in self.workers:
            store = StateStore(worker.state_path)
            try:
                delivered += worker.step(Outbox(store), flush=True)
            finally:
                store.close()
        return delivered

    def __enter__(self) -> Notifier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _groups(sink: Sink, notices: Sequence[Notice]) -> list[list[Notice]]:
    groups: dict[str | None, list[Notice]] = {}
    for notice in notices:
        groups.setdefault(sink.group_key(notice), []).append(notice)
    return list(groups.values())
