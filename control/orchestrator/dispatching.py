"""Dispatching: the ready phases matched to live workers by the scheduler, each recorded
before it is sent, and a ready phase no worker can take said why."""

from __future__ import annotations

from control.budget import OverBudget
from control.health import (
    REFUSING,
    STOPPED,
    off_pins,
)
from control.inventory import Worker
from control.orchestrator.base import IN_FLIGHT
from control.orchestrator.liveness import Liveness
from control.orchestrator.pacing import Pacing
from control.orchestrator.tasks import Tasks
from control.scheduler import Assignment, Outlook, ReadyPhase, WorkerState, assign, frees_in


class Dispatching(Pacing, Tasks, Liveness):
    """Sending ready phases to the workers the scheduler picks."""

    def _resend(self) -> None:
        """Attempts recorded as `sending` whose enqueue was never confirmed (a crash): resend.

        The key is the same, so a send that did land is stored once and reported as a
        duplicate; nothing runs twice.
        """
        up = {w.name for w in self.up_workers()}
        for attempt in self.store.attempts(self.run_id):
            if attempt.state == "sending" and attempt.worker in up:
                self._send(attempt)

    def _dispatch(self) -> None:
        now = self.clock()
        if self._paused(now):
            return
        phases = self.store.phases(self.run_id)
        done = {p for p, row in phases.items() if row.state == "done"}
        in_flight = [row for row in phases.values() if row.state in IN_FLIGHT]
        blocked = {p for p, row in phases.items() if row.state not in ("waiting", "done")}
        ready_ids = [
            p for p in self.dag.ready(done, running=blocked) if (phases[p].not_before or 0.0) <= now
        ]
        if not ready_ids:
            return
        limit = self.settings.max_concurrent
        room = len(ready_ids) if limit is None else max(0, limit - len(in_flight))
        if self.settings.stagger_s > 0:
            if now - self._last_dispatch < self.settings.stagger_s:
                return
            room = min(room, 1)
        if room == 0:
            return
        busy: dict[str, int] = {}
        urgent: dict[str, float] = {}  # the highest priority running on each worker
        # (since when, estimate) of each phase running there: when a slot should free
        running: dict[str, list[tuple[float, float]]] = {}
        for p, row in phases.items():
            if row.worker and row.state in IN_FLIGHT:
                busy[row.worker] = busy.get(row.worker, 0) + 1
                urgent[row.worker] = max(urgent.get(row.worker, 0.0), self.bottom[p])
                estimate = (row.updated_at, self._phase(p).estimate_minutes)
                running.setdefault(row.worker, []).append(estimate)
        holds: dict[str, set[str]] = {}
        for p in done:
            if phases[p].worker:
                holds.setdefault(phases[p].worker or "", set()).add(p)
        states = [
            WorkerState(
                w.name,
                self._capabilities(w),
                max(0, w.slots - busy.get(w.name, 0)),
                frozenset(holds.get(w.name, set())),
                slots=w.slots,
                slot_cost=w.slot_cost,
                running_priority=urgent.get(w.name, 0.0),
                frees_in=frees_in(running.get(w.name, ()), now, w.slot_cost),
            )
            for w in self.up_workers()
        ]

        def as_ready(p: str) -> ReadyPhase:
            return ReadyPhase(
                id=p,
                requires=self._requires(p),
                pin=self._phase(p).worker,
                priority=self.bottom[p],
                depends_on=frozenset(self._phase(p).depends_on),
                minutes=self._phase(p).estimate_minutes,
            )

        ready = [as_ready(p) for p in ready_ids]
        # Rarity is judged against all the work not started, and when it could be ready.
        not_started = [p for p, row in phases.items() if row.state == "waiting"]
        outlook = Outlook.of(map(as_ready, not_started), self.dag.soonest(done, blocked))
        assigned, over = self._start(assign(ready, states, outlook)[:room], now)
        self._note_over_budget(over, in_flight=bool(in_flight or assigned))
        self._say_stuck([r for r in ready if r.id not in assigned and r.id not in over], states)

    def _start(self, assignments: list[Assignment], now: float) -> tuple[set[str], dict[str, str]]:
        """Record and send each assignment on an account (when its agent has accounts)
        with its cap reserved; returns the phases sent, and why each other one waits."""
        assigned: set[str] = set()
        over: dict[str, str] = {}
        held = self._account_holds(now)
        in_use = self.store.accounts_in_use()
        for assignment in assignments:
            choice = self._account_for(assignment.phase_id, assignment.worker, in_use, held, now)
            if isinstance(choice, str):
                over[assignment.phase_id] = choice
                continue
            try:
                attempt = self.store.record_sending(
                    self.run_id,
                    assignment.phase_id,
                    assignment.worker,
                    cap_usd=self._phase(assignment.phase_id).budget_usd,
                    account=None if choice is None else choice.account.name,
                )
            except OverBudget as exc:
                over[assignment.phase_id] = f"over budget: {exc}"
                continue
            if choice is not None:
                in_use[choice.account.name] = in_use.get(choice.account.name, 0) + 1
            assigned.add(assignment.phase_id)
            self._send(attempt)
            self._last_dispatch = self.clock()
        return assigned, over

    def _capabilities(self, worker: Worker) -> frozenset[str]:
        """A worker's capabilities, plus `account:<agent>` for each agent it holds an
        account of: a phase whose agent has accounts goes only where one is usable."""
        held = {f"account:{a.agent}" for a in self.accounts.values() if a.usable_on(worker.name)}
        return worker.capabilities | held

    def _requires(self, phase_id: str) -> frozenset[str]:
        phase = self._phase(phase_id)
        own = phase.agent.backend
        extra = {f"account:{own}"} if any(a.agent == own for a in self.accounts.values()) else set()
        return frozenset(phase.requires) | extra

    def _say_stuck(self, waiting: list[ReadyPhase], states: list[WorkerState]) -> None:
        """A ready phase that no live worker can take: say why, once per change (in the
        log, the live view and `status`), instead of waiting in silence."""
        rows = self.store.workers()
        for phase in waiting:
            capable = [
                w for w in self.workers.values()
                if phase.requires <= self._capabilities(w)
                and (phase.pin is None or phase.pin == w.name)
            ]  # fmt: skip
            live = {s.name for s in states}
            if not capable:
                reason = "no worker in the inventory can take it"
            elif any(w.name in live for w in capable):
                reason = None  # a capable worker is up: it waits for a free slot
            else:
                refusing = [
                    f"{w.name}: {rows[w.name].reason}"
                    for w in capable
                    if w.name in rows and rows[w.name].beat_status == REFUSING
                ]
                stopped = [
                    w.name
                    for w in capable
                    if w.name in rows and rows[w.name].beat_status == STOPPED
                ]
                drained = [w.name for w in capable if w.name in rows and rows[w.name].drained]
                off = [
                    f"{w.name}: {', '.join(found)}"
                    for w in capable
                    if w.name in rows and (found := off_pins(rows[w.name].versions, self._pins))
                ]
                need = f" with {', '.join(sorted(phase.requires))}" if phase.requires else ""
                if refusing and len(refusing) == len(capable):
                    reason = "every capable worker refuses work (" + "; ".join(refusing) + ")"
                elif stopped and len(stopped) == len(capable):
                    reason = f"every capable worker is stopped ({', '.join(stopped)}): start one"
                elif drained and len(drained) == len(capable):
                    reason = f"every capable worker is drained ({', '.join(drained)})"
                elif off and len(off) + len(drained) >= len(capable):
                    reason = (
                        "every capable worker is drained or runs other versions than this "
                        f"run's pins ({'; '.join(off)})"
                    )
                else:
                    reason = f"no live worker{need} (capable: {', '.join(w.name for w in capable)})"
            if self._stuck.get(phase.id) != reason:
                self._stuck[phase.id] = reason
                self.store.note_waiting(self.run_id, phase.id, reason)
                if reason is not None:
                    self._say("phase_stuck", phase=phase.id, reason=reason)
