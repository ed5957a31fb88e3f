"""Rolling upgrade: a few hosts at a time, drain, wait until idle, provision, check the
new versions, undrain, next. Work keeps flowing on the other hosts; nothing is handed
back (a plain drain lets what runs finish), so no phase is lost or counted as failed.

A host that fails its provisioning or its health check stops the rollout and stays
drained, the reason in its drain flag (so `control health` shows it).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.errors import SuperagentError, UsageError
from control.health import NOT_WORKING, beat_of, off_pins, pins_of
from control.inventory import Worker
from control.lifecycle import drain, undrain
from control.transport import PollResult, Transports

# Provisions the given hosts; raises SuperagentError when it fails.
Provision = Callable[[Sequence[Worker]], None]
UPGRADING = "upgrading"


class UpgradeFailed(SuperagentError):
    """A host could not be provisioned or did not come back healthy."""


@dataclass
class RolloutSettings:
    batch: int = 1  # hosts upgraded at a time
    idle_timeout_s: float = 3600.0  # how long a drained host may take to finish its phases
    health_timeout_s: float = 300.0  # how long a provisioned host may take to beat healthy
    poll_s: float = 2.0


@dataclass
class HostStep:
    host: str
    ok: bool
    seconds: float
    reason: str | None = None


@dataclass
class Rollout:
    steps: list[HostStep] = field(default_factory=list)
    stopped: str | None = None  # why the rollout stopped early

    @property
    def ok(self) -> bool:
        return self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "stopped": self.stopped, "steps": [s.__dict__ for s in self.steps]}


def ansible_provision(
    inventory: Path,
    playbook: Path,
    *,
    ansible_playbook: str | None = None,
    vault_password_file: Path | None = None,
) -> Provision:
    """Provision hosts with `ansible-playbook --limit` (and their tunnel endpoints); the
    one installed beside this Python by default (ansible is an orchestrator dependency)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    command = ansible_playbook or (str(beside) if beside.exists() else "ansible-playbook")

    def provision(hosts: Sequence[Worker]) -> None:
        limit = ",".join(w.name for w in hosts) + ":tunnel_endpoints"
        done = subprocess.run(
            [command, "-i", str(inventory), str(playbook), "--limit", limit]
            + (["--vault-password-file", str(vault_password_file)] if vault_password_file else []),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise UpgradeFailed(
                f"ansible-playbook exited {done.returncode}: {_why(done.stdout + done.stderr)}"
            )

    return provision


_FAILED_LINE = re.compile(r"^(?:fatal: \[|failed: \[|\[ERROR\]|ERROR!)")


def _why(output: str) -> str:
    """What a failed playbook said: its first failure line (the task's message), or the
    last words when there is none."""
    lines = output.splitlines()
    for number, line in enumerate(lines):
        if _FAILED_LINE.match(line.strip()):
            failure = " ".join(" ".join(lines[number : number + 4]).split())
            return failure[:600]
    return " ".join(output.split()[-40:])


def _problems(worker: Worker, result: PollResult, before: float | None) -> list[str]:
    """Why `worker` is not healthy on its new versions yet ([] when it is)."""
    if not result.reachable:
        return [f"unreachable: {result.error}"]
    beat = beat_of(worker.name, result)
    if beat is None or beat.get("beat_at") == before:
        return ["no heartbeat since it was provisioned"]
    if beat.get("status") in NOT_WORKING:
        return [f"{beat.get('status')}: {beat.get('reason') or 'no reason given'}"]
    return off_pins(beat.get("versions"), pins_of(worker))


def _busy(worker: Worker, result: PollResult) -> bool:
    if not result.reachable:
        return True
    beat = beat_of(worker.name, result) or {}
    claimed = int((result.stats.get("by_state") or {}).get("claimed", 0))
    return claimed > 0 or bool(beat.get("current"))


def rolling_upgrade(
    workers: Sequence[Worker],
    transports: Transports,
    provision: Provision,
    settings: RolloutSettings | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Rollout:
    """Upgrade `workers` a batch at a time; stops at the first host that fails."""
    settings = settings or RolloutSettings()
    if settings.batch < 1:
        raise UsageError(f"batch must be at least 1, got {settings.batch}")
    rollout = Rollout()
    for start in range(0, len(workers), settings.batch):
        batch = list(workers[start : start + settings.batch])
        began = clock()
        for worker in batch:
            drain(worker, transports, reason=UPGRADING)
        reason = _wait(
            batch,
            transports,
            lambda w, r: ["still running phases"] if _busy(w, r) else [],
            settings.idle_timeout_s,
            settings.poll_s,
            sleep,
            clock,
        )
        if reason is None:
            before = {
                name: (beat_of(name, r) or {}).get("beat_at")
                for name, r in transports.poll(batch, limit=0).items()
            }
            try:
                provision(batch)
            except SuperagentError as exc:
                reason = f"provisioning failed: {exc}"
            else:

                def unhealthy(w: Worker, r: PollResult, seen: dict[str, Any] = before) -> list[str]:
                    return _problems(w, r, seen.get(w.name))

                reason = _wait(
                    batch,
                    transports,
                    unhealthy,
                    settings.health_timeout_s,
                    settings.poll_s,
                    sleep,
                    clock,
                )
        seconds = round(clock() - began, 1)
        if reason is not None:
            for worker in batch:  # stays drained, the reason where `health` shows it
                with contextlib.suppress(SuperagentError):  # unreachable: `upgrading` stands
                    drain(worker, transports, reason=f"upgrade failed: {reason}")
                rollout.steps.append(HostStep(worker.name, False, seconds, reason))
            rollout.stopped = f"{', '.join(w.name for w in batch)}: {reason}"
            return rollout
        for worker in batch:
            undrain(worker, transports)
            rollout.steps.append(HostStep(worker.name, True, seconds))
    return rollout


def _wait(
    batch: Sequence[Worker],
    transports: Transports,
    problems_of: Callable[[Worker, PollResult], list[str]],
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> str | None:
    """Poll `batch` until no host has a problem (None), or the timeout: the problems."""
    deadline = clock() + timeout_s
    while True:
        results = transports.poll(batch, limit=0)
        found = {w.name: problems_of(w, results[w.name]) for w in batch}
        left = {name: p for name, p in found.items() if p}
        if not left:
            return None
        if clock() > deadline:
            return "; ".join(f"{name}: {', '.join(p)}" for name, p in left.items()) + (
                f" (after {timeout_s:g}s)"
            )
        sleep(poll_s)
