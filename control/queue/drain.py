"""The drain flag: an operator's "take no new work" kept in the inbox itself, so it holds
across restarts of the worker and travels through the same protocol."""

from __future__ import annotations

from control.queue.base import InboxBase
from control.queue.records import Drain


class Draining(InboxBase):
    """Drain, undrain, and whether the inbox is drained."""

    def drain(self, *, now: bool = False, reason: str | None = None) -> Drain:
        """Stop this inbox's worker claiming new work (and, with `now`, running any).

        Draining again keeps the first `since`; `now` only ever escalates, so a plain
        drain after a `--now` one does not bring back a run already handed back.
        """
        with self._lock, self._write(durable=True) as conn:
            row = conn.execute(
                "INSERT INTO drain (id, now, reason, since) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET now = MAX(now, excluded.now), "
                "reason = COALESCE(excluded.reason, reason) RETURNING now, reason, since",
                (int(now), reason, self._clock()),
            ).fetchone()
        return Drain(bool(row["now"]), row["reason"], float(row["since"]))

    def undrain(self) -> bool:
        """Let the worker claim again; False when it was not drained."""
        with self._lock, self._write(durable=True) as conn:
            return conn.execute("DELETE FROM drain RETURNING id").fetchone() is not None

    def drained(self) -> Drain | None:
        with self._lock:
            row = self._conn.execute("SELECT now, reason, since FROM drain").fetchone()
        return None if row is None else Drain(bool(row["now"]), row["reason"], float(row["since"]))
