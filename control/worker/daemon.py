"""The worker daemon (`control worker run`): take messages from the inbox and run them.

One thread per slot runs a claimed message; the main thread waits on inotify,
claims into free slots, renews every lease and beats the heartbeat. A slot that
finishes a message `done` while the worker may still claim stores the result and
leases its next message in one transaction (`complete_and_claim`) and runs it at
once. A cancel seen on renew, a lost lease and SIGTERM all stop a run through its
`RunControl`; on SIGTERM the daemon hands unfinished messages back to the inbox and
exits cleanly.
The inbox's drain flag stops it claiming (`control drain`); with `--now` it hands
back what it runs, as on SIGTERM, and keeps running, idle, until undrained.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from control.errors import ConflictError, SuperagentError
from control.queue import Claimed, Queue
from control.worker.checks import CheckReport, installed, run_checks
from control.worker.config import WorkerConfig
from control.worker.contract import (
    CANCELLED,
    DRAINED_NOW,
    LEASE_LOST,
    SHUTDOWN,
    Executor,
    MessageOutcome,
    RunControl,
)
from control.worker.wake import InboxWatcher, await_commit

log = logging.getLogger("superagent.worker")
PRUNE_EVERY_S = 3600.0
# The checks run again this often even when nothing seems reinstalled (a stat does not
# see every change: a library under Node, a package manager that keeps the mtime).
RECHECK_EVERY_S = 300.0

# The heartbeat's status while the inbox's drain flag is set (busy or idle).
DRAINED = "drained"


@dataclass
class _Slot:
    name: str
    claimed: Claimed
    control: RunControl
    thread: threading.Thread
    started: float = field(default_factory=time.time)


class WorkerDaemon:
    """The `control worker run` process: claims messages from the inbox, runs each in a
    slot of its own, beats the heartbeat (the machine it runs on is an inventory `Worker`)."""

    def __init__(self, config: WorkerConfig, executor: Executor) -> None:
        self.config = config
        self.executor = executor
        self.queue = Queue(config.queue_db, create=False)
        self.watcher = InboxWatcher(config.queue_db, use_inotify=config.inotify)
        self.stopping = threading.Event()
        self.slots: dict[str, _Slot] = {}
        self.report = CheckReport()
        self._last_beat = 0.0
        self._drained = False
        self._last_prune = 0.0
        self._installed = installed(config)
        self._last_check = 0.0
        # Held while a slot thread swaps in its next message, and by shutdown: no slot
        # takes a message once the daemon is closing.
        self._slots_lock = threading.Lock()
        self._closing = False
        self._finished = 0
        self._max_messages: int | None = None

    # -- lifecycle -----------------------------------------------------------------

    def check(self) -> CheckReport:
        """Run the checks and, on a mismatch, say so in the heartbeat."""
        self._installed = installed(self.config)
        self._last_check = time.time()
        self.report = run_checks(self.config)
        if not self.report.ok:
            self.queue.beat(
                self.config.worker_id,
                "refusing",
                versions=self.report.versions,
                reason=self.report.reason,
            )
            log.error("refusing work: %s", self.report.reason)
        return self.report

    def stop(self, *_: Any) -> None:
        self.stopping.set()
        self.watcher.wake()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: finishing", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, *, max_messages: int | None = None) -> int:
        """Work until stopped (or `max_messages` were finished); returns an exit code."""
        if not self.check().ok:
            return 1
        released = self.queue.release_expired_of(self.config.worker_id)
        if released:
            log.info("put back %d of my messages whose lease had expired", released)
        self._max_messages = max_messages
        log.info(
            "worker %s ready: %d slot(s), inbox %s, %s",
            self.config.worker_id,
            self.config.slots,
            self.config.queue_db,
            "inotify"
            if self.watcher.uses_inotify
            else f"polling every {self.config.poll_seconds:g}s",
        )
        try:
            while not self.stopping.is_set():
                self._reap()
                if max_messages is not None and self._finished >= max_messages:
                    break
                self._follow_drain()
                self._recheck()
                self._fill_slots()
                self._renew_and_beat()
                self._prune()
                seen = self.queue.data_version()
                if self.watcher.wait(self._wait_time()) == "changed":
                    await_commit(self.queue.data_version, seen)
        finally:
            self._shutdown()
        return 0

    def _prune(self) -> None:
        """Forget acknowledged messages past `prune_days`, at start and then hourly."""
        now = time.time()
        if self.config.prune_days <= 0 or now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        pruned = self.queue.prune(self.config.prune_days)
        if pruned:
            log.info(
                "pruned %d acknowledged message(s) older than %g days",
                pruned,
                self.config.prune_days,
            )

    def _wait_time(self) -> float:
        """Until the next heartbeat is due (idle or not: the orchestrator judges liveness by
        it), a lease runs out that frees a message, or the slow poll, whichever is first."""
        now = time.time()
        limit = min(self._last_beat + self.config.heartbeat_seconds, now + self.config.poll_seconds)
        if len(self.slots) < self.config.slots and (expiry := self.queue.next_lease_expiry()):
            limit = min(limit, expiry + 0.01)
        return max(0.05, limit - now)

    # -- claiming and running ----------------------------------------------------------

    def _follow_drain(self) -> None:
        """Read the drain flag (every wake: setting it writes the inbox); `--now` stops
        every run, which `_finish` then hands back to the inbox."""
        drain = self.queue.drained()
        if (drain is not None) != self._drained:
            self._drained = drain is not None
            log.info("drained: claiming nothing new" if drain else "undrained: claiming again")
            self._beat(force=True)
        if drain is not None and drain.now:
            with self._slots_lock:  # no slot swaps in a next message unseen
                slots = list(self.slots.values())
            for slot in slots:
                if not slot.control.stopped:
                    log.info("message %d: drained --now; handing it back", slot.claimed.id)
                    slot.control.stop(DRAINED_NOW)

    def _recheck(self) -> None:
        """Run the checks again when Node or Claude Code was reinstalled under the running
        daemon (or every RECHECK_EVERY_S): a worker that started fit and drifted refuses
        new work and says why in its heartbeat, as one that started unfit does, and the
        orchestrator moves its attempts elsewhere (a refusing worker is not healthy).
        Fit again (the pins restored), it claims again."""
        due = time.time() - self._last_check >= RECHECK_EVERY_S
        if not due and installed(self.config) == self._installed:
            return
        was_ok = self.report.ok
        if self.check().ok and not was_ok:
            log.info("checks pass again: claiming again")
            self._beat(force=True)

    def _fill_slots(self) -> None:
        while (
            len(self.slots) < self.config.slots
            and not self.stopping.is_set()
            and not self._drained
            and self.report.ok
        ):
            if not self.queue.has_work():
                return
            claimed = self.queue.claim(self.config.worker_id, self.config.lease_seconds)
            if claimed is None:
                return
            name = next(
                f"slot{i}" for i in range(self.config.slots) if f"slot{i}" not in self.slots
            )
            control = RunControl()
            thread = threading.Thread(
                target=self._run_one, args=(claimed, control, name), name=name, daemon=True
            )
            self.slots[name] = _Slot(name, claimed, control, thread)
            log.info(
                "claimed message %d (%s) attempt %d into %s",
                claimed.id,
                claimed.key or "no key",
                claimed.attempt,
                name,
            )
            thread.start()
            self._beat(force=True)

    def _run_one(self, claimed: Claimed, control: RunControl, slot: str) -> None:
        current: tuple[Claimed, RunControl] | None = (claimed, control)
        while current is not None:
            claimed, control = current
            try:
                outcome = self.executor(claimed, control, slot)
            except Exception as exc:  # a bug or an environment failure: report, never hang
                log.exception("message %d crashed the executor", claimed.id)
                outcome = MessageOutcome.refused(self.config.worker_id, f"worker error: {exc}")
            try:
                current = self._finish(claimed, control, outcome, slot)
            except SuperagentError as exc:
                log.error("message %d: could not store the result: %s", claimed.id, exc)
                current = None
            finally:
                with self._slots_lock:
                    self._finished += 1
            if current is not None:
                self._beat(force=True)

    def _may_take_next(self, control: RunControl) -> bool:
        """Whether a slot that just finished may lease its next message itself (under
        `_slots_lock`): the same conditions as `_fill_slots`, and not past `max_messages`."""
        return (
            control.reason is None
            and not self._closing
            and not self.stopping.is_set()
            and not self._drained
            and self.report.ok
            and (self._max_messages is None or self._finished + 1 < self._max_messages)
        )

    def _finish(
        self, claimed: Claimed, control: RunControl, outcome: MessageOutcome, slot: str
    ) -> tuple[Claimed, RunControl] | None:
        """Store the outcome; returns the next message this slot leased with it, if any."""
        if control.reason in (SHUTDOWN, DRAINED_NOW) and outcome.status != "done":
            why = control.reason if control.reason == DRAINED_NOW else None
            self.queue.release(claimed.id, claimed.fence, why or "worker stopped before finishing")
            log.info("message %d handed back: %s", claimed.id, control.reason)
            return None
        taken: tuple[Claimed, RunControl] | None = None
        if outcome.status == "done":
            with self._slots_lock:
                if self._may_take_next(control):
                    result, nxt = self.queue.complete_and_claim(
                        claimed.id,
                        claimed.fence,
                        outcome.response,
                        self.config.worker_id,
                        self.config.lease_seconds,
                    )
                    if nxt is not None:
                        taken = (nxt, RunControl())
                        self.slots[slot] = _Slot(slot, nxt, taken[1], threading.current_thread())
                else:
                    result = self.queue.complete(claimed.id, claimed.fence, outcome.response)
        else:
            reason = outcome.reason or outcome.status
            result = self.queue.fail(claimed.id, claimed.fence, reason, outcome.response)
        if result.accepted:
            log.info("message %d %s%s", claimed.id, result.state,
                     f": {outcome.reason}" if outcome.reason else "")  # fmt: skip
        else:
            log.warning(
                "message %d: result of fence %d recorded as stale (now fence %d, %s)",
                claimed.id,
                claimed.fence,
                result.current_fence,
                result.state,
            )
        if taken is not None:
            log.info(
                "claimed message %d (%s) attempt %d into %s with the result of %d",
                taken[0].id,
                taken[0].key or "no key",
                taken[0].attempt,
                slot,
                claimed.id,
            )
        return taken

    def _reap(self) -> None:
        done = [name for name, slot in self.slots.items() if not slot.thread.is_alive()]
        for name in done:
            self.slots.pop(name).thread.join()
        if done:
            self._beat(force=True)

    def _renew_and_beat(self) -> None:
        if time.time() - self._last_beat < self.config.heartbeat_seconds:
            return
        for slot in list(self.slots.values()):
            if slot.control.stopped:
                continue
            try:
                renewed = self.queue.renew(
                    slot.claimed.id, slot.claimed.fence, self.config.lease_seconds
                )
            except ConflictError as exc:
                log.warning("message %d: %s; stopping its run", slot.claimed.id, exc)
                slot.control.stop(LEASE_LOST)
                continue
            if renewed.cancel_requested:
                log.info("message %d: cancel requested; stopping its run", slot.claimed.id)
                slot.control.stop(CANCELLED)
        self._beat()

    def _beat(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_beat < self.config.heartbeat_seconds:
            return
        current = [
            {
                "id": s.claimed.id,
                "key": s.claimed.key,
                "slot": s.name,
                "attempt": s.claimed.attempt,
                "started": s.started,
                "log": s.control.log_path,
                "phase": (s.claimed.payload or {}).get("phase_id")
                if isinstance(s.claimed.payload, dict)
                else None,
            }
            for s in list(self.slots.values())
        ]
        if self.stopping.is_set():
            status = "stopping"
        elif not self.report.ok:
            status = "refusing"
        else:
            status = DRAINED if self._drained else ("busy" if current else "idle")
        self.queue.beat(
            self.config.worker_id,
            status,
            current=current,
            versions=self.report.versions,
            reason=self.report.reason,
        )
        self._last_beat = now

    def _shutdown(self) -> None:
        with self._slots_lock:
            self._closing = True  # from here no slot swaps in a next message
            slots = list(self.slots.values())
        for slot in slots:
            slot.control.stop(SHUTDOWN)
        for slot in slots:
            slot.thread.join()
        self.slots.clear()
        try:
            self.queue.beat(self.config.worker_id, "stopped", versions=self.report.versions)
        finally:
            self.watcher.close()
            self.queue.close()
        log.info("worker %s stopped", self.config.worker_id)
