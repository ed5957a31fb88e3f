"""A run's money: what one attempt may reserve from the run's budget, and the burn rate.

Pure arithmetic, no I/O: the state database calls `reserve` inside the transaction
that records a dispatch, so two dispatches racing for the last dollars cannot both
get them; the orchestrator calls `burn_rate` on what its attempts cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from control.errors import ConflictError

# Less than this left is nothing: no agent does useful work for a cent.
MIN_RESERVATION_USD = 0.01
BURN_WINDOW_S = 3600.0


class OverBudget(ConflictError):
    """The attempt's cap does not fit in what is left of the run's budget."""

    def __init__(self, message: str, *, left: float, needed: float | None) -> None:
        super().__init__(message)
        self.left = left
        self.needed = needed


def usd(amount: float) -> str:
    return f"${amount:,.2f}"


def reserve(budget: float | None, committed: float, cap: float | None, what: str) -> float:
    """What an attempt with per-attempt `cap` reserves, or OverBudget.

    `committed` is what the run spent plus what its attempts in flight reserved. With
    no run budget the reservation is the cap (or 0: no cap at all). With one, the cap
    must fit in what is left; an attempt with no cap takes all that is left (so it
    runs alone), and the agent is given the reservation as its own limit.
    """
    if budget is None:
        return cap or 0.0
    left = round(budget - committed, 6)
    needed = cap if cap is not None else MIN_RESERVATION_USD
    if left < needed or left < MIN_RESERVATION_USD:
        raise OverBudget(
            f"{what} needs {usd(needed)} but only {usd(max(left, 0.0))} of the run's budget "
            f"{usd(budget)} is left ({usd(committed)} spent or reserved)",
            left=left,
            needed=cap,
        )
    return cap if cap is not None else left


@dataclass(frozen=True)
class Spend:
    """One attempt's cost and when it was recorded (epoch seconds)."""

    at: float
    usd: float


def burn_rate(spends: Iterable[Spend], now: float, window_s: float = BURN_WINDOW_S) -> float:
    """Dollars per hour spent in the last `window_s` seconds."""
    total = sum(s.usd for s in spends if now - window_s <= s.at <= now)
    return total * 3600.0 / window_s


def burn_pause_until(
    spends: Iterable[Spend], now: float, limit_per_hour: float, window_s: float = BURN_WINDOW_S
) -> float | None:
    """When the burn rate falls back to `limit_per_hour` as the oldest costs age out of
    the window (no new spending meanwhile), or None when it is not above it now."""
    recent = sorted((s for s in spends if now - window_s <= s.at <= now), key=lambda s: s.at)
    allowed = limit_per_hour * window_s / 3600.0
    total = sum(s.usd for s in recent)
    if total <= allowed:
        return None
    for spend in recent:
        total -= spend.usd
        if total <= allowed:
            return spend.at + window_s
    return now + window_s  # not reached: the last cost alone is over the limit
