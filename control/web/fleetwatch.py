"""The fleet as `control health` would see it now, kept fresh for the fleet page.

The state database holds what the orchestrator last saw, which stops moving when no
`control dispatch` runs. With an inventory, the dashboard also polls every worker
itself: one fan-out per transport every few seconds, reading heartbeats and inbox
statistics only (nothing claimed, acknowledged or written), judged by
`control.health.health_report` like `control health`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from control.errors import SuperagentError
from control.health import health_report
from control.inventory import Worker
from control.transport import PollResult

EVERY_S = 5.0


class FleetWatch:
    """The latest health report of each worker, refreshed by a background task."""

    def __init__(
        self,
        fleet: Sequence[Worker],
        poll: Callable[[Sequence[Worker]], Mapping[str, PollResult]],
        every_s: float = EVERY_S,
    ) -> None:
        self.fleet = list(fleet)
        self.poll = poll
        self.every_s = every_s
        self.reports: dict[str, dict[str, Any]] = {}
        self.polled_at: float | None = None
        self.error: str | None = None

    def refresh(self) -> None:
        try:
            results = self.poll(self.fleet)
        except SuperagentError as exc:
            self.error = str(exc)
            return
        now = time.time()
        self.reports = {
            w.name: health_report(w, results[w.name], now) for w in self.fleet if w.name in results
        }
        self.polled_at, self.error = now, None

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.refresh)
            await asyncio.sleep(self.every_s)
