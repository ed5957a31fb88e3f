"""One live orchestrator per run: a lease in the run's row, renewed every tick, taken
over when it runs out or when its holder's process is gone from this host."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from control.errors import ConflictError, NotFoundError
from control.jsontext import canonical_json
from control.state.base import StoreBase
from control.state.rows import RunRow, loads


def _gone(driver: dict[str, Any], me: dict[str, Any]) -> bool:
    """A driver on this very host whose process no longer exists (killed: its lease
    has not run out yet, but nobody will renew it)."""
    if driver.get("host") != me.get("host") or not isinstance(driver.get("pid"), int):
        return False
    if driver["pid"] == me.get("pid"):
        return True  # this very process opens the run again (its earlier driver is over)
    return _dead(driver["pid"])


def _dead(pid: int) -> bool:
    """Whether no process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Driver(StoreBase):
    """The run's driver lease and how a run's status reads because of it."""

    def acquire_driver(self, run_id: str, holder: dict[str, Any], ttl_s: float) -> None:
        """Become the one live orchestrator of `run_id`, or say who is.

        A lease: the driver renews it every tick; a killed driver's lease runs out,
        and one on this host whose process is gone is taken over at once.
        """
        now = self.clock()
        with self.write() as conn:
            row = conn.execute(
                "SELECT driver, driver_expires_at FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.path}: no run {run_id!r}")
            current = loads(row["driver"])
            live = (
                current is not None
                and (row["driver_expires_at"] or 0) > now
                and current.get("token") != holder.get("token")
                and not _gone(current, holder)
            )
            if live:
                until = time.strftime("%H:%M:%S", time.localtime(row["driver_expires_at"]))
                raise ConflictError(
                    f"run {run_id} is driven by process {current.get('pid')} on "
                    f"{current.get('host')} (lease until {until}); stop it first, or wait "
                    "for its lease to run out"
                )
            conn.execute(
                "UPDATE runs SET driver = ?, driver_expires_at = ? WHERE id = ?",
                (canonical_json(holder), now + ttl_s, run_id),
            )

    def renew_driver(self, run_id: str, token: str, ttl_s: float) -> bool:
        """Extend the lease; False when another driver took the run over."""
        with self.write() as conn:
            row = conn.execute(
                "UPDATE runs SET driver_expires_at = ? WHERE id = ? "
                "AND json_extract(driver, '$.token') = ? RETURNING id",
                (self.clock() + ttl_s, run_id, token),
            ).fetchone()
        return row is not None

    def release_driver(self, run_id: str, token: str) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE runs SET driver = NULL, driver_expires_at = NULL WHERE id = ? "
                "AND json_extract(driver, '$.token') = ?",
                (run_id, token),
            )

    def live_driver(self, run: RunRow) -> dict[str, Any] | None:
        """Who drives the run now, or None (no orchestrator, its lease ran out, or it
        ran on this host and its process is gone: killed, the lease not yet out)."""
        if run.driver is None or (run.driver_expires_at or 0) <= self.clock():
            return None
        driver = dict(run.driver)
        pid = driver.get("pid")
        if driver.get("host") == socket.gethostname() and isinstance(pid, int) and _dead(pid):
            return None
        return driver

    def run_state(self, run: RunRow) -> str:
        """One word: a `running` run whose orchestrator is gone is `interrupted`. What
        `runs`, `status --json` and the dashboard show, so no reader takes it for running."""
        if run.status == "running" and self.live_driver(run) is None:
            return "interrupted"
        return run.status

    def run_status(self, run: RunRow) -> str:
        """The run's status as a person should read it: a `running` run whose
        orchestrator is gone (killed, its lease run out) is `interrupted`, not running."""
        if run.status != "running":
            return run.status
        driver = self.live_driver(run)
        if driver is None:
            return "interrupted (no live orchestrator; `control dispatch` resumes it)"
        return f"running (driven by process {driver.get('pid')} on {driver.get('host')})"
