"""Dispatching: the ready phases matched to live workers by the scheduler, each recorded
before it is sent, and a ready phase no worker can take said why."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from control.accounts import VERSION_KEYS, offers
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
from control.orchestrator.readiness import busy_slots, progress, ready_now
from control.orchestrator.tasks import Tasks
from control.scheduler import Assignment, Outlook, ReadyPhase, WorkerState, assign, frees_in
from control.state.rows import WorkerRow


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
        done, started = progress(phases)
        in_flight = [row for row in phases.values() if row.state in IN_FLIGHT]
        ready_ids = ready_now(self.dag, phases, now, (done, started))
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
        busy = busy_slots(phases.values())
        urgent: dict[str, float] = {}  # the highest priority running on each worker
        # (since when, estimate) of each phase running there: when a slot should free
        running: dict[str, list[tuple[float, float]]] = {}
        for p, row in phases.items():
            if row.worker and row.state in IN_FLIGHT:
                urgent[row.worker] = max(urgent.get(row.worker, 0.0), self.bottom[p])
                estimate = (row.updated_at, self._phase(p).estimate_minutes)
                running.setdefault(row.worker, []).append(estimate)
        holds: dict[str, set[str]] = {}
        for p in done:
            if phases[p].worker:
                holds.setdefault(phases[p].worker or "", set()).add(p)
        rows = self.store.workers()
        states = [
            WorkerState(
                w.name,
                self._capabilities(w, rows),
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
        outlook = Outlook.of(map(as_ready, not_started), self.dag.soonest(done, started))
        assigned, over = self._start(assign(ready, states, outlook)[:room], now, rows)
        self._note_over_budget(over, in_flight=bool(in_flight or assigned))
        waiting = [r for r in ready if r.id not in assigned and r.id not in over]
        self._say_stuck(waiting, states, rows)

    def _start(
        self, assignments: list[Assignment], now: float, rows: Mapping[str, WorkerRow]
    ) -> tuple[set[str], dict[str, str]]:
        """Record and send each assignment on an account (when its agent has accounts)
        with its cap reserved; returns the phases sent, and why each other one waits."""
        assigned: set[str] = set()
        over: dict[str, str] = {}
        held = self._account_holds(now)
        in_use = self.store.accounts_in_use()
        for assignment in assignments:
            row = rows.get(assignment.worker)
            missing = {
                agent for agent in VERSION_KEYS
                if not offers(row.versions if row else None, agent, own_credential=False)
            }  # fmt: skip
            choice = self._account_for(
                assignment.phase_id, assignment.worker, in_use, held, now, missing
            )
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

    @cached_property
    def _agent_labels(self) -> dict[str, tuple[tuple[str, ...], bool]]:
        """Each phase's agent requirement as a capability label (`agent:codex`, or
        `agent:claude-code|codex` with a fallback): the agents it may run with, in
        order, and whether accounts decide (`_agents`). A worker has the label when it
        can run one of them: the scheduler stays pure, matching labels as capabilities."""
        labels = {}
        for phase in self.spec.phases:
            if label := self._agent_label(phase.id):
                labels[label] = self._agents(phase.id)
        return labels

    def _agent_label(self, phase_id: str) -> str | None:
        agents, _ = self._agents(phase_id)
        if not any(a in VERSION_KEYS for a in agents):
            return None  # a command or replay phase: no agent CLI to look for
        return "agent:" + "|".join(agents)

    def _runs(
        self, worker: str, row: WorkerRow | None, agent: str, by_accounts: bool
    ) -> str | None:
        """Why `worker` cannot run `agent` (its CLI not installed, no credential, no
        account usable there), or None when it can."""
        versions = row.versions if row else None
        if not offers(versions, agent, own_credential=not by_accounts):
            if offers(versions, agent, own_credential=False):
                return f"{agent} has no credential there"
            return f"{agent} not installed"
        if by_accounts and not any(
            a.agent == agent and a.usable_on(worker) for a in self.accounts.values()
        ):
            return f"no {agent} account usable there"
        return None

    def _capabilities(self, worker: Worker, rows: Mapping[str, WorkerRow]) -> frozenset[str]:
        """A worker's capabilities, plus the agent label of each phase agent it can run
        (its heartbeat reports the CLI, and an account is usable there when the agent
        goes by accounts): a phase goes only where its agent, or a fallback, can run."""
        row = rows.get(worker.name)
        runs = {
            label for label, (agents, by_accounts) in self._agent_labels.items()
            if any(self._runs(worker.name, row, a, by_accounts) is None for a in agents)
        }  # fmt: skip
        return worker.capabilities | runs

    def _requires(self, phase_id: str) -> frozenset[str]:
        label = self._agent_label(phase_id)
        return frozenset(self._phase(phase_id).requires) | ({label} if label else set())

    def _say_stuck(
        self, waiting: list[ReadyPhase], states: list[WorkerState], rows: Mapping[str, WorkerRow]
    ) -> None:
        """A ready phase that no live worker can take: say why, once per change (in the
        log, the live view and `status`), instead of waiting in silence."""
        for phase in waiting:
            label = self._agent_label(phase.id)
            fits = [
                w for w in self.workers.values()
                if phase.requires - {label} <= w.capabilities
                and (phase.pin is None or phase.pin == w.name)
            ]  # fmt: skip
            capable = [w for w in fits if phase.requires <= self._capabilities(w, rows)]
            live = {s.name for s in states}
            if not fits:
                reason = "no worker in the inventory can take it"
            elif not capable:
                agents, by_accounts = self._agents(phase.id)
                lacks = [
                    f"{w.name}: "
                    + ", ".join(str(self._runs(w.name, rows.get(w.name), a, by_accounts))
                                for a in agents)
                    for w in fits
                ]  # fmt: skip
                reason = f"none with agent {' or '.join(agents)} ({'; '.join(lacks)})"
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
