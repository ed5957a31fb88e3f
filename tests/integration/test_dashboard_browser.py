"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver, against `control serve` as a real process.

Screenshots of every page at desktop and phone width land in artifacts/dashboard/
(CI keeps that folder)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from control.demo import EXAMPLE_WORKERS, EXAMPLES
from control.errors import SuperagentError
from control.state import PhaseRow, StateStore
from control.web.auth import COOKIE, TOKEN_ENV
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
from tests.integration.conftest import Pipeline, write_spec
from tests.support import kill_tree, need

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
                    loaded = driver.execute_script(
                        "return performance.getEntriesByType('resource').map(e => e.name)"
                    )
                    assert loaded and all(u.startswith(server.url + "/") for u in loaded), loaded
                    screenshot(driver, f"{name}-{width}")


# -- the web-app example, live ------------------------------------------------------

NODE_STATES = (
    "return Object.fromEntries(Array.from(document.querySelectorAll('#graph a.node'))"
    ".map(n => [n.dataset.phase, n.dataset.state]))"
)
TOKEN = "a-token-for-the-live-browser-test"


def _webapp_phases() -> list[dict[str, Any]]:
    """The web-app example's graph (ids, dependencies, capabilities, estimates), each
    phase writing one file the scripted agent is told to write."""
    example = json.loads((EXAMPLES / "webapp.json").read_text())
    phases = []
    for p in example["phases"]:
        phases.append(
            {
                "id": p["id"],
                "title": p["title"],
                "task": f"Write out/{p['id']}.txt saying done.",
                "depends_on": p.get("depends_on", []),
                "requires": p.get("requires", []),
                "estimate_minutes": p.get("estimate_minutes", 30),
                "deliverables": [f"out/{p['id']}.txt"],
                "verify": [f"grep -qx done out/{p['id']}.txt"],
                **({"max_attempts": 1} if p["id"] == "windows-paths" else {}),
            }
        )
    return phases


def _latest_run(state: Path) -> str | None:
    try:
        reader = StateStore.read_only(state)
    except SuperagentError:  # not made yet, or being made by the dispatch
        return None
    try:
        run = reader.latest_run()
        return None if run is None else run.id
    finally:
        reader.close()


def _phase(state: Path, run_id: str, phase: str) -> PhaseRow:
    reader = StateStore.read_only(state)
    try:
        return reader.phases(run_id)[phase]
    finally:
        reader.close()


def _text(driver: Any, css: str) -> str:
    return str(driver.execute_script(f"return document.querySelector({css!r}).textContent"))


def test_the_web_app_example_live(pipeline: Pipeline, tmp_path: Path) -> None:
    need(have_chromium(), "Debian's chromium and chromium-driver (tests/setup-system.sh)")
    phases = _webapp_phases()
    plan = {p["id"]: {"delay_s": 3, "files": {f"out/{p['id']}.txt": "done\n"}} for p in phases}
    plan["schema"]["delay_s"] = 10  # the first: still running when the page opens
    plan["frontend"]["delay_s"] = 60  # to watch its log and kill its worker, however loaded
    plan["windows-paths"] = {"delay_s": 1, "exit": 1}  # dies: retried from the page
    pipeline.plan(plan)
    fleet = pipeline.start_fleet(*EXAMPLE_WORKERS)
    spec = write_spec(tmp_path / "webapp.json", phases)
    pipeline.start_dispatch(spec)
    state = pipeline.state
    run_id = wait_for(lambda: _latest_run(state), timeout_s=30)
    run_url = f"/runs/{run_id}"
    env = {TOKEN_ENV: TOKEN}
    extra = ("--actions", "--inventory", str(fleet.inventory))
    with serving(state, *extra, env=env) as server, chromium() as driver:
        driver.get(server.url + "/")
        assert driver.current_url.endswith("/login")  # nothing without the token
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "sign-in").click()
        wait_for(lambda: driver.current_url == server.url + "/")

        # The graph moves with the run, without a reload.
        driver.get(server.url + run_url)
        driver.execute_script("window.__same_page = true")
        seen: dict[str, list[str]] = {}

        def frontend_running() -> bool:
            for phase, node_state in driver.execute_script(NODE_STATES).items():
                if not seen.get(phase) or seen[phase][-1] != node_state:
                    seen.setdefault(phase, []).append(node_state)
            return seen.get("frontend", [""])[-1] == "dispatched"

        wait_for(frontend_running, timeout_s=90, every_s=0.05)
        assert driver.execute_script("return window.__same_page") is True
        # Seen on this one page: phases that started and phases that finished.
        moved = {p: states for p, states in seen.items() if len(states) >= 2}
        assert any(s[-1] == "done" and "done" not in s[:-1] for s in moved.values()), seen
        assert any("waiting" in s and "dispatched" in s for s in moved.values()), seen
        screenshot(driver, "run-live-desktop")

        # A phase's log tail grows while it runs.
        driver.get(f"{server.url}{run_url}/phases/frontend")

        def log_size() -> int:
            return int(
                driver.execute_script("return document.getElementById('log').dataset.size || 0")
            )

        first = wait_for(log_size, timeout_s=20)
        wait_for(lambda: log_size() > first, timeout_s=20)
        assert "working..." in _text(driver, "#log")
        screenshot(driver, "phase-log-desktop")

        # A worker killed goes down on the page, and its phase moves to another.
        driver.get(server.url + run_url)
        driver.execute_script("window.__same_page = true")
        victim = _phase(state, run_id, "frontend").worker
        assert victim is not None
        process = fleet.workers[victim].process
        assert process is not None
        kill_tree(process.pid)
        process.wait()
        plan["frontend"]["delay_s"] = 3  # the attempt on another worker is quick
        pipeline.plan(plan)
        worker_badge = f'li[data-worker="{victim}"] .badge'
        wait_for(lambda: _text(driver, worker_badge) == "down", timeout_s=30)
        frontend_worker = 'tr[data-phase="frontend"] td:nth-child(3)'
        wait_for(lambda: _text(driver, frontend_worker) not in ("", victim), timeout_s=30)
        assert driver.execute_script("return window.__same_page") is True
        screenshot(driver, "run-worker-down-desktop")
        fleet.start(victim)  # back, for the phases only it can run

        # A retry: refused without the token, done with it.
        wait_for(lambda: _phase(state, run_id, "windows-paths").state == "dead", timeout_s=60)
        action = f"{server.url}{run_url}/phases/windows-paths/retry"
        cookie = driver.get_cookie(COOKIE)["value"]
        for headers in ({}, {"cookie": f"{COOKIE}={cookie}"}):  # no session; no CSRF value
            request = urllib.request.Request(action, data=b"csrf=", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code in (401, 403)
        assert _phase(state, run_id, "windows-paths").state == "dead"
        plan["windows-paths"] = {"delay_s": 1, "files": {"out/windows-paths.txt": "done\n"}}
        pipeline.plan(plan)
        driver.get(f"{server.url}{run_url}/phases/windows-paths")
        driver.find_element(By.ID, "retry").click()
        wait_for(lambda: "retry recorded" in driver.page_source, timeout_s=10)
        assert _phase(state, run_id, "windows-paths").state != "dead"
        if all(p.poll() is not None for p in pipeline.dispatches):  # the run had ended
            pipeline.start_dispatch(spec)
        driver.get(server.url + run_url)
        wait_for(lambda: _text(driver, "p.facts .badge") == "done", timeout_s=120)

        for size, width in ((DESKTOP, "desktop"), (PHONE, "phone")):
            driver.set_window_size(*size)
            for name, page in (
                ("runs", "/"),
                ("run", run_url),
                ("phase", f"{run_url}/phases/frontend"),
                ("fleet", "/fleet"),
                ("costs", "/costs"),
            ):
                driver.get(server.url + page)
                screenshot(driver, f"{name}-{width}")
