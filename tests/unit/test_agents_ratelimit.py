"""Rate-limit notices in the wordings Claude Code has used, and their reset times."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from control.worker.agents.ratelimit import looks_rate_limited, reset_epoch, starts_rate_limited

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 4, 1, 13, 42, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize(
    "text",
    [
        "Claude AI usage limit reached|1760000400",
        "Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).",
        "5-hour limit reached ∙ resets 3pm",
        "You've hit your limit · resets 8pm (Europe/Berlin)",
        "You've hit your session limit · resets Apr 23 at 4pm (America/Recife)",
        "You\u2019ve reached your weekly limit",
        "API Error: Rate limit reached",
        '429 {"type":"error","error":{"type":"rate_limit_error","message":"..."}}',
    ],
)
def test_limit_notices_are_recognised(text: str) -> None:
    assert looks_rate_limited(text)
    assert starts_rate_limited(text)


@pytest.mark.parametrize(
    "text",
    [
        "Added a token-bucket rate limiter; requests over the limit get 429.",
        "Done. I implemented the rate limit reached handler in api/limits.py.\n\nSUPERAGENT",
        "Implemented the rate limit reached handler",
        "Wrote tests for 'You have hit your limit' pages.",
        "",
    ],
)
def test_work_about_rate_limits_is_not_a_limit_notice(text: str) -> None:
    assert not starts_rate_limited(text)


def test_a_long_summary_that_mentions_a_limit_is_not_a_notice() -> None:
    text = "Claude AI usage limit reached handling was added. " + "More detail. " * 60
    assert not starts_rate_limited(text)


def test_epoch_reset() -> None:
    assert reset_epoch("Claude AI usage limit reached|1760000400", NOW) == 1760000400.0


def test_clock_time_later_today_in_the_named_zone() -> None:
    expected = datetime(2026, 4, 1, 20, 0, tzinfo=BERLIN).timestamp()
    assert reset_epoch("You've hit your limit · resets 8pm (Europe/Berlin)", NOW) == expected


def test_clock_time_already_past_means_tomorrow() -> None:
    expected = datetime(2026, 4, 2, 9, 30, tzinfo=BERLIN).timestamp()
    assert reset_epoch("limit reached ∙ resets 9:30am (Europe/Berlin)", NOW) == expected


def test_date_and_time() -> None:
    recife = ZoneInfo("America/Recife")
    expected = datetime(2026, 4, 23, 16, 0, tzinfo=recife).timestamp()
    text = "You've hit your session limit · resets Apr 23 at 4pm (America/Recife)"
    assert reset_epoch(text, NOW) == expected


def test_a_date_in_early_january_said_in_december_is_next_year() -> None:
    december = datetime(2026, 12, 30, 12, 0, tzinfo=BERLIN).timestamp()
    expected = datetime(2027, 1, 2, 10, 0, tzinfo=BERLIN).timestamp()
    assert reset_epoch("resets Jan 2 at 10am (Europe/Berlin)", december) == expected


def test_resets_in_a_duration() -> None:
    assert reset_epoch("You've hit your fast limit · resets in 2h 5m", NOW) == NOW + 7500


def test_no_time_given() -> None:
    assert reset_epoch("API Error: Rate limit reached", NOW) is None
    assert reset_epoch("resets 13pm", NOW) is None
