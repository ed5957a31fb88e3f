"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver, against `control serve` as a real process.

Screenshots of every page at desktop and phone width land in artifacts/dashboard/
(CI keeps that folder)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard import (
    CANARY,
    DESKTOP,
    PHONE,
    chromium,
    have_chromium,
    hostile_state,
    html_corpus,
    screenshot,
    serving,
    wait_for,
)
from tests.support import need

pytestmark = pytest.mark.slow

# Whatever the page holds that a payload could have made: elements that run script or
# load something, inline handlers, javascript: links, and the canary itself.
INJECTED = """
const bad = [];
for (const el of document.querySelectorAll('*')) {
  for (const a of el.getAttributeNames()) {
    if (a.startsWith('on')) bad.push(el.tagName + ' ' + a);
  }
  const href = (el.getAttribute('href') || '').trim().toLowerCase();
  if (href.startsWith('javascript:')) bad.push(el.tagName + ' href');
}
for (const el of document.querySelectorAll('img, iframe, object, embed, style')) {
  bad.push(el.tagName);
}
for (const el of document.querySelectorAll('script')) {
  if (el.getAttribute('src') !== '/static/app.js') bad.push('script');
}
return {bad: bad, canary: window.CANARY === undefined ? null : window.CANARY,
        hidden: getComputedStyle(document.body).display === 'none'};
""".replace("CANARY", CANARY)


def _check(driver: Any, page: str) -> None:
    found = driver.execute_script(INJECTED)
    assert found == {"bad": [], "canary": None, "hidden": False}, (page, found)


def test_the_xss_corpus_never_runs(tmp_path: Path) -> None:
    need(have_chromium(), "Debian's chromium and chromium-driver (tests/setup-system.sh)")
    state = tmp_path / "state.db"
    run_id = hostile_state(state, html_corpus())
    run = urllib.parse.quote(run_id, safe="")
    bad = urllib.parse.quote('x"><img src=x onerror=window.__xss=1>', safe="")
    pages = {
        "hostile-runs": "/",
        "hostile-run": f"/runs/{run}",
        "hostile-phase": f"/runs/{run}/phases/api",
        "hostile-phase-id": f"/runs/{run}/phases/{bad}",
        "hostile-fleet": "/fleet",
        "hostile-costs": "/costs",
    }
    with serving(state) as server:
        for size, width in ((DESKTOP, "desktop"), (PHONE, "phone")):
            with chromium(size) as driver:
                for name, page in pages.items():
                    driver.get(server.url + page)
                    if page != "/costs":  # a page with a live stream: the script ran
                        wait_for(
                            lambda: (
                                driver.execute_script(
                                    "return document.getElementById('live').dataset.live"
                                )
                                == "on"
                            ),
                            timeout_s=15,
                        )
                    # Hover and focus everything, so handlers that wait for them would run.
                    driver.execute_script(
                        "for (const el of document.querySelectorAll('*')) {"
                        " el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
                        " if (el.focus) el.focus(); }"
                    )
                    _check(driver, page)
                    screenshot(driver, f"{name}-{width}")
