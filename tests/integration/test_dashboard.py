"""`control serve` as a real process over a real state database: every page escapes
what agents wrote, carries a strict CSP and runs no inline script; the server never
writes the database; a token guards every page when set; actions need the token, the
form's CSRF value and a same-origin request; the live stream follows the events."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control import __version__
from control.cli import app
from control.localfleet import LocalFleet, WorkerShape
from control.state import StateStore
from control.web.app import CSP
from control.web.auth import TOKEN_ENV
from tests.dashboard import Server, hostile_state, html_corpus, serving, wait_for

TOKEN = "t0ken-for-the-dashboard-tests"
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "link", "script", "body", "header", "nav", "span", "a",
    "main", "h1", "h2", "h3", "p", "b", "div", "table", "thead", "tbody", "tr", "th", "td",
    "progress", "svg", "path", "rect", "text", "tspan", "ul", "li", "dl", "dt", "dd", "pre",
    "section", "details", "summary", "form", "input", "button", "label", "code", "g",
}  # fmt: skip


class _Tags(HTMLParser):
    """Every element and attribute of a page, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(
        "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {}
    )
    answer = conn.getresponse()
    body = answer.read().decode()
    conn.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body


def _post(
    url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = urllib.parse.urlencode(form)
    sent = {"content-type": "application/x-www-form-urlencoded", **(headers or {})}
    conn.request("POST", parts.path, body=body, headers=sent)
    answer = conn.getresponse()
    text = answer.read().decode()
    conn.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, text


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, str]:
    state = tmp_path / "state.db"
    return state, hostile_state(state, html_corpus())


def _pages(run_id: str) -> list[str]:
    run = urllib.parse.quote(run_id, safe="")
    bad = urllib.parse.quote('x"><img src=x onerror=window.__xss=1>', safe="")
    return [
        "/",
        f"/runs/{run}",
        f"/runs/{run}/phases/api",
        f"/runs/{run}/phases/{bad}",
        "/fleet",
        "/costs",
        "/runs/%3Cimg%20src%3Dx%20onerror%3Dwindow.__xss%3D1%3E",  # a 404 that names it
    ]


def test_every_page_shows_the_corpus_as_text_only(hostile: tuple[Path, str]) -> None:
    state, run_id = hostile
    with serving(state) as server:
        for page in _pages(run_id):
            status, headers, body = _get(server.url + page)
            assert status in (200, 404), (page, status, body[:500])
            assert headers["content-security-policy"] == CSP
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"
            tags = _Tags()
            tags.feed(body)
            names = {tag for tag, _ in tags.found}
            assert names <= ALLOWED_TAGS, (page, names - ALLOWED_TAGS)
            for tag, attrs in tags.found:
                assert not [a for a in attrs if a.startswith("on")], (page, tag, attrs)
                assert tag != "script" or attrs == {"src": "/static/app.js", "defer": None}
                href = (attrs.get("href") or "").strip().lower()
                assert not href.startswith(("javascript:", "data:")), (page, href)
            if page == _pages(run_id)[-1]:
                assert "&lt;img src=x onerror=window.__xss=1&gt;" in body
            elif page != "/costs":  # which shows ids and figures only
                assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in body, page


def test_the_server_never_writes_the_state_database(hostile: tuple[Path, str]) -> None:
    state, run_id = hostile

    def fingerprint() -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(state.parent.glob("state.db*"))
            # The -shm is readers' shared index; an empty -wal (a reader opening a WAL
            # database makes one) holds nothing.
            if not p.name.endswith("-shm") and p.stat().st_size
        }

    before = fingerprint()
    with serving(state) as server:
        for page in _pages(run_id):
            _get(server.url + page)
    assert fingerprint() == before
    reader = StateStore.read_only(state)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.conn.execute("UPDATE runs SET status = 'done'")
    reader.close()


def _snapshots(url: str, headers: dict[str, str] | None = None) -> Iterator[dict[str, object]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    conn.request("GET", f"{parts.path}?{parts.query}", headers=headers or {})
    answer = conn.getresponse()
    assert answer.status == 200
    assert answer.getheader("content-type", "").startswith("text/event-stream")
    try:
        event = ""
        while True:
            line = answer.fp.readline().decode()
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event == "snapshot":
                yield json.loads(line[6:])
    finally:
        conn.close()


def test_the_stream_sends_what_an_event_changed(hostile: tuple[Path, str]) -> None:
    state, run_id = hostile
    bad = 'x"><img src=x onerror=window.__xss=1>'
    with serving(state) as server:
        stream = _snapshots(f"{server.url}/stream?{urllib.parse.urlencode({'run': run_id})}")
        first = next(stream)
        assert first["phases"][bad]["state"] == "dead"  # type: ignore[index]
        writer = StateStore(state)
        writer.retry_phases(run_id, [bad], "from the test")  # one event, one new snapshot
        writer.close()
        second = next(stream)
        assert second["phases"][bad]["state"] == "waiting"  # type: ignore[index]
        assert second["run"]["state"] == "interrupted"  # type: ignore[index]  reopened, no driver


def test_an_unknown_host_header_is_refused(hostile: tuple[Path, str]) -> None:
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 gets nothing.
    state, _ = hostile
    with serving(state) as server:
        status, _, _ = _get(server.url + "/", {"host": "evil.example"})
        assert status == 400


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--host", "0.0.0.0"], {}, "reachable from other machines"),
        (["--host", "192.0.2.1"], {}, "reachable from other machines"),
        (["--actions"], {}, "--actions needs a token"),
        ([], {TOKEN_ENV: "short"}, "needs at least 16"),
    ],
)
def test_a_binding_the_token_does_not_cover_is_refused(
    hostile: tuple[Path, str], args: list[str], env: dict[str, str], message: str
) -> None:
    state, _ = hostile
    result = runner.invoke(app, ["serve", "--state", str(state), *args], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o644)
    result = runner.invoke(
        app, ["serve", "--state", str(tmp_path / "x.db"), "--token-file", str(token)]
    )
    assert result.exit_code == 2 and "readable by others" in result.output


def test_a_missing_state_database_is_not_created(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--state", str(tmp_path / "none.db")])
    assert result.exit_code == 3 and "no state database" in result.output
    assert not (tmp_path / "none.db").exists()


def _sign_in(server: Server, token: str = TOKEN) -> str | None:
    status, headers, _ = _post(server.url + "/login", {"token": token})
    if status != 303:
        return None
    return headers["set-cookie"].split(";", 1)[0]


def test_with_a_token_every_page_needs_signing_in(hostile: tuple[Path, str]) -> None:
    state, run_id = hostile
    with serving(state, env={TOKEN_ENV: TOKEN}) as server:
        for page in _pages(run_id)[:-1]:
            status, headers, _ = _get(server.url + page, {"accept": "text/html"})
            assert (status, headers.get("location")) == (303, "/login"), page
        status, _, _ = _get(f"{server.url}/stream?run={run_id}")
        assert status == 401
        assert _sign_in(server, "wrong-token-of-the-same-size!") is None
        cookie = _sign_in(server)
        assert cookie is not None
        status, _, body = _get(server.url + "/", {"cookie": cookie})
        assert status == 200 and run_id in body


def _phase_state(state: Path, run_id: str, phase: str) -> str:
    reader = StateStore.read_only(state)
    try:
        return reader.phases(run_id)[phase].state
    finally:
        reader.close()


def test_an_action_needs_the_token_the_csrf_value_and_the_same_origin(
    hostile: tuple[Path, str],
) -> None:
    state, run_id = hostile
    bad = 'x"><img src=x onerror=window.__xss=1>'
    action = f"/runs/{urllib.parse.quote(run_id)}/phases/{urllib.parse.quote(bad, safe='')}/retry"
    with serving(state, "--actions", env={TOKEN_ENV: TOKEN}) as server:
        cookie = _sign_in(server)
        assert cookie is not None
        _, _, page = _get(
            f"{server.url}/runs/{run_id}/phases/{urllib.parse.quote(bad, safe='')}",
            {"cookie": cookie},
        )
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        host = f"127.0.0.1:{server.port}"
        refused = [
            ({"csrf": csrf}, {}),  # no session: the token was never given
            ({}, {"cookie": cookie}),  # no CSRF value
            ({"csrf": "0" * 64}, {"cookie": cookie}),  # a wrong one
            ({"csrf": csrf}, {"cookie": cookie, "sec-fetch-site": "cross-site"}),
            ({"csrf": csrf}, {"cookie": cookie, "origin": "http://evil.example"}),
        ]
        for form, headers in refused:
            status, _, body = _post(server.url + action, form, headers)
            assert status in (401, 403), (form, headers, status)
            assert "refused" in body
            assert _phase_state(state, run_id, bad) == "dead"
        status, headers, _ = _post(
            server.url + action,
            {"csrf": csrf},
            {"cookie": cookie, "origin": f"http://{host}", "sec-fetch-site": "same-origin"},
        )
        assert status == 303 and headers["location"].endswith("?done=retry")
        assert _phase_state(state, run_id, bad) == "waiting"


def test_without_actions_nothing_can_be_changed(hostile: tuple[Path, str]) -> None:
    state, run_id = hostile
    with serving(state, env={TOKEN_ENV: TOKEN}) as server:
        cookie = _sign_in(server)
        assert cookie is not None
        status, _, body = _post(
            f"{server.url}/runs/{run_id}/phases/api/cancel", {"csrf": "x"}, {"cookie": cookie}
        )
        assert status == 403 and "actions are not enabled" in body
        assert _phase_state(state, run_id, "api") == "done"
    with serving(state) as server:  # no token at all: read-only, whatever is posted
        status, _, _ = _post(f"{server.url}/runs/{run_id}/phases/api/cancel", {})
        assert status == 403


def test_the_cookie_is_httponly_and_samesite_strict(hostile: tuple[Path, str]) -> None:
    state, _ = hostile
    with serving(state, env={TOKEN_ENV: TOKEN}) as server:
        status, headers, _ = _post(server.url + "/login", {"token": TOKEN})
        assert status == 303
        cookie = headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert TOKEN.lower() not in cookie  # a derived value, never the token itself


def test_started_with_the_environment_only(tmp_path: Path) -> None:
    # The token never appears on the server's command line.
    state = tmp_path / "state.db"
    hostile_state(state, ["x"])
    with serving(state, env={TOKEN_ENV: TOKEN}) as server:
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert TOKEN.encode() not in cmdline
        assert os.environ.get(TOKEN_ENV) != TOKEN


def test_the_fleet_page_polls_the_workers_itself(tmp_path: Path) -> None:
    # No dispatch has ever seen this worker: what the page shows comes from the
    # dashboard's own read-only poll (heartbeat, versions), as `control health` would.
    fleet = LocalFleet(tmp_path / "fleet", [WorkerShape("solo", ("linux",))])
    fleet.create()
    fleet.start()
    try:
        fleet.wait_ready()
        state = tmp_path / "state.db"
        StateStore(state).close()
        with serving(state, "--inventory", str(fleet.inventory)) as server:

            def polled() -> str | None:
                _, _, body = _get(server.url + "/fleet")
                return body if "Polled by this dashboard" in body else None

            body = wait_for(polled, timeout_s=20)
            row = body.split('data-worker="solo"', 1)[1].split("</tr>", 1)[0]
            assert 'data-state="up"' in row and "idle" in row
            assert f"superagent {__version__}" in row
            assert "unreachable" not in row
    finally:
        fleet.stop()
