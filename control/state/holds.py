"""Fleet-wide holds on dispatching (an account's rate limit) that survive a restart."""

from __future__ import annotations

from control.state.base import StoreBase


class Holds(StoreBase):
    """Named holds with an end; a later end extends one, an earlier never shortens it."""

    def hold(
        self, name: str, until: float, reason: str, run_id: str | None = None,
        *, event: str = "rate_limit_hold",
    ) -> None:  # fmt: skip
        """A hold on dispatching (e.g. an account's rate limit) that survives restarts;
        a later `until` extends it, an earlier one never shortens it."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO holds (name, until, reason) VALUES (?, ?, ?) ON CONFLICT (name) "
                "DO UPDATE SET until = MAX(until, excluded.until), reason = excluded.reason",
                (name, until, reason),
            )
            detail = {"until": until, "reason": reason}
            self._event(conn, run_id, event, None, None, detail)

    def release_hold(
        self, name: str, run_id: str | None = None, *, event: str = "rate_limit_resumed"
    ) -> bool:
        """End a hold whose time has come, saying so once (whoever ends it first)."""
        with self.write() as conn:
            gone = conn.execute(
                "DELETE FROM holds WHERE name = ? AND until <= ? RETURNING reason",
                (name, self.clock()),
            ).fetchone()
            if gone is not None:
                self._event(conn, run_id, event, None, None, {"reason": gone[0]})
        return gone is not None

    def held_until(self, name: str) -> float:
        row = self.conn.execute("SELECT until FROM holds WHERE name = ?", (name,)).fetchone()
        return 0.0 if row is None else float(row["until"])
