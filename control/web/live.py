"""Live updates for open pages, as server-sent events.

One poller for every connected page: each tick it reads the newest event id of the
stream (one primary-key lookup) and wakes the pages waiting on it. What a page is sent
after a batch of events is made once for all the pages showing the same thing (the
same run, or the fleet) and shared: a hundred open pages of a 1,000-phase run cost one
snapshot per batch, not a hundred.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from control.events import last_id
from control.state import StateStore

TICK_S = 0.25
KEEPALIVE_S = 15.0
SHARED = 64  # snapshots kept: (what, event id) pairs, most recent first


def sse(event: str, data: Any) -> str:
    """One server-sent event; JSON never holds a raw newline, so it is one data line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class EventHub:
    """Watches the event stream of one state database for every page at once."""

    def __init__(self, state: Path, tick_s: float = TICK_S) -> None:
        self.state = state
        self.tick_s = tick_s
        self.latest = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._store: StateStore | None = None
        self._made: OrderedDict[tuple[str, int], asyncio.Future[str]] = OrderedDict()

    def _read(self) -> int:
        if self._store is None:
            self._store = StateStore.read_only(self.state)
        return last_id(self._store.conn)

    async def start(self) -> None:
        self.latest = await asyncio.to_thread(self._read)
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._store is not None:
            self._store.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            newest = await asyncio.to_thread(self._read)
            if newest != self.latest:
                self.latest = newest
                async with self._changed:
                    self._changed.notify_all()

    async def wait_beyond(self, cursor: int, timeout_s: float) -> int:
        """The newest id once it passes `cursor`, or `cursor` after `timeout_s`."""
        if self.latest > cursor:
            return self.latest
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.latest > cursor), timeout_s
                )
            except TimeoutError:
                return cursor
        return self.latest

    async def shared(self, what: str, cursor: int, take: Callable[[], Any]) -> str:
        """The snapshot event of `what` as of event `cursor`, made once (in a thread)
        for every page that asks for the same pair."""
        key = (what, cursor)
        made = self._made.get(key)
        if made is None:
            made = asyncio.get_running_loop().create_future()
            self._made[key] = made
            while len(self._made) > SHARED:
                self._made.popitem(last=False)
            try:
                made.set_result(sse("snapshot", await asyncio.to_thread(take)))
            except BaseException as exc:
                self._made.pop(key, None)
                made.set_exception(exc)
                raise
        return await asyncio.shield(made)


async def snapshots(
    hub: EventHub,
    what: str,
    take: Callable[[], Any],
    disconnected: Callable[[], Any],
    keepalive_s: float = KEEPALIVE_S,
) -> AsyncIterator[str]:
    """A snapshot now, then one after each batch of new events, until the page goes."""
    cursor = hub.latest
    yield await hub.shared(what, cursor, take)
    while not await disconnected():
        newest = await hub.wait_beyond(cursor, keepalive_s)
        if newest == cursor:
            yield ": keepalive\n\n"
            continue
        cursor = newest
        yield await hub.shared(what, cursor, take)
