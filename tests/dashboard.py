"""Helpers for the dashboard's tests and benchmark: a state database with hostile text
in every field an agent can write, `control serve` as a real process, and headless
Chromium (Debian's, driven by Selenium through Debian's chromedriver)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from control.state import StateStore

CONTROL = (sys.executable, "-m", "control")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Screenshots of every page, kept by CI as artifacts (the README names this folder).
ARTIFACTS = Path(os.environ.get("SUPERAGENT_ARTIFACTS", REPO / "artifacts")) / "dashboard"
DESKTOP = (1280, 900)
PHONE = (390, 844)
CANARY = "__xss"  # what a payload that ran would set on `window`


def html_corpus() -> list[str]:
    """Text that would run in a page handed it unescaped: each sets window.__xss."""
    js = f"window.{CANARY}=1"
    return [
        f"<script>{js}</script>",
        f'"><script>{js}</script>',
        f'\'><img src=x onerror="{js}">',
        f'" onmouseover="{js}" autofocus onfocus="{js}" x="',
        f"' onfocus='{js}' autofocus x='",
        f"</title><script>{js}</script>",
        f'</pre><svg onload="{js}">',
        f"javascript:{js}",
        f'<a href="javascript:{js}">click</a>',
        f"]]><![CDATA[<script>{js}</script>",
        f'<iframe srcdoc="<script>parent.{CANARY}=1</script>"></iframe>',
        "</textarea></style><style>body{display:none}</style>",
        "{{ 7*7 }} {% raw %} ${7*7}",
        "line\u2028separator\u2029paragraph",
    ]


def hostile_state(path: Path, corpus: Sequence[str], *, now: float | None = None) -> str:
    """A state database whose every agent-writable field carries `corpus` (joined):
    spec path and title, reasons, summaries, branch names, commits, verify commands
    and output, a worker's reason and versions, a merge branch. Returns the run id."""
    text = " ".join(corpus)
    store = StateStore(path)
    bad_phase = 'x"><img src=x onerror=window.__xss=1>'
    spec = {
        "name": text,
        "phases": [
            {"id": "api", "title": text, "estimate_minutes": 5},
            {"id": bad_phase, "title": text, "depends_on": ["api"]},
            {"id": "docs", "title": text, "depends_on": ["api", bad_phase]},
        ],
    }
    run_id = store.create_run(
        f"specs/{text}.json",
        "h",
        spec,
        [("api", f"sa/api-{text}"), (bad_phase, "sa/x"), ("docs", "sa/docs")],
    )
    for phase in ("api", bad_phase):
        attempt = store.record_sending(run_id, phase, "w1")
        store.record_dispatched(attempt, 1, False)
        response = {
            "key": attempt.key,
            "id": 1,
            "state": "done",
            "response": {
                "status": "done" if phase == "api" else "failed",
                "summary": text,
                "commit": text[:60],
                "agent": {"cost_usd": 0.42},
                "verify": [
                    {"command": text, "exit_code": 1, "output_tail": text, "duration_s": 1.0}
                ],
            },
        }
        store.settle_attempt(
            attempt,
            attempt_state="done" if phase == "api" else "failed",
            phase_state="done" if phase == "api" else "dead",
            reason=text,
            response=response,
            commit="0123456789abcdef0123456789abcdef01234567" if phase == "api" else None,
            cost_usd=0.42,
            summary=text,
            event="phase_done" if phase == "api" else "phase_dead",
        )
    store.update_worker(
        "w1",
        status="down",
        reason=text,
        versions={"node": text, "superagent": "0"},
        beat_at=now or time.time(),
        beat_seen_at=now or time.time(),
        beat_status="refusing",
    )
    store.set_merge(run_id, f"sa/integration/{text}", text[:40])
    store.finish_run(run_id, "failed", text)
    store.close()
    return run_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`control serve` as a process of its own, on a free port of 127.0.0.1."""

    def __init__(self, state: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*CONTROL, "serve", "--state", str(state), "--port", str(self.port), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            text=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.url + "/static/app.css", timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    out = self.stop()
                    raise RuntimeError(f"control serve did not start: {out}") from None
                time.sleep(0.05)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        self.process.stdout.close()
        return out


@contextlib.contextmanager
def serving(state: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(state, *extra, env=env)
    try:
        yield server
    finally:
        server.stop()


def have_chromium() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


@contextlib.contextmanager
def chromium(size: tuple[int, int] = DESKTOP) -> Iterator[Any]:
    """Headless Chromium from Debian, through Debian's chromedriver (same version)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's own sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """The page at desktop and phone width, under ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(condition: Any, timeout_s: float = 30.0, every_s: float = 0.1) -> Any:
    """Poll `condition()` until it is truthy; its value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not within {timeout_s}s: {getattr(condition, '__name__', condition)}"
            )
        time.sleep(every_s)
