"""What a model's tokens cost, for the agent CLIs that report tokens but no money.

US dollars per million tokens as the vendors publish them (list prices, 2025-11): an
estimate, and the result says so (`cost_estimated`). A model not in the table has no
estimate; the run's budget then charges the attempt its whole reservation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_DATED = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens: input not cached, input read from cache, output."""

    input: float
    cached_input: float
    output: float


PRICES: Mapping[str, Price] = {
    # OpenAI (codex)
    "gpt-5": Price(1.25, 0.125, 10.0),
    "gpt-5-codex": Price(1.25, 0.125, 10.0),
    "gpt-5.1": Price(1.25, 0.125, 10.0),
    "gpt-5.1-codex": Price(1.25, 0.125, 10.0),
    "gpt-5-mini": Price(0.25, 0.025, 2.0),
    "codex-mini-latest": Price(1.5, 0.375, 6.0),
    # Google (gemini)
    "gemini-2.5-pro": Price(1.25, 0.31, 10.0),
    "gemini-2.5-flash": Price(0.30, 0.075, 2.50),
    "gemini-2.5-flash-lite": Price(0.10, 0.025, 0.40),
    # Anthropic (opencode with an Anthropic model; claude-code reports its own cost)
    "claude-sonnet-4-5": Price(3.0, 0.30, 15.0),
    "claude-opus-4-1": Price(15.0, 1.50, 75.0),
    "claude-haiku-4-5": Price(1.0, 0.10, 5.0),
}


def price_of(model: str | None) -> Price | None:
    """The price of `model` (a `provider/` prefix and a date suffix, `-YYYYMMDD` or
    `-YYYY-MM-DD`, ignored)."""
    if not model:
        return None
    name = model.rsplit("/", 1)[-1].lower()
    return PRICES.get(name) or PRICES.get(_DATED.sub("", name))


def estimate_usd(
    model: str | None, *, input_tokens: int, cached_input_tokens: int, output_tokens: int
) -> float | None:
    """The cost of a run's tokens at `model`'s list price; None for a model not listed.
    `input_tokens` counts the cached ones too (as every CLI here reports it)."""
    price = price_of(model)
    if price is None:
        return None
    fresh = max(0, input_tokens - cached_input_tokens)
    total = fresh * price.input + cached_input_tokens * price.cached_input
    return round((total + output_tokens * price.output) / 1_000_000, 6)
