"""The dashboard's web application (Starlette): pages, live streams, the two actions.

Every page reads the state database through a read-only connection opened for that
request; only an action (retry, cancel, when `--actions` is on) opens it for writing,
for that one change. Every response carries a strict Content-Security-Policy (scripts
and styles from this server only, nothing inline), and the templates escape every
value: agent-written text reaches the page only as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.errors import ConflictError, NotFoundError, SuperagentError
from control.health import pins_of
from control.inventory import Worker
from control.phase_log import fetch_log, sent_attempt
from control.state import AttemptRow, StateStore
from control.transport import PollResult, Transports
from control.web import model
from control.web.auth import COOKIE, Access
from control.web.fleetwatch import FleetWatch
from control.web.graph import NODE_H, NODE_W
from control.web.live import EventHub, snapshots, sse

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a form POST carries `Origin: null`,
    # and the origin check of an action needs the real one. Other sites get nothing.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}
LOG_TAIL_BYTES = 32 * 1024
LOG_TICK_S = 1.0
TABLE_PHASES = 300  # a run with more phases lists them in a table only on request
OPEN_PATHS = ("/login", "/static/")


@dataclass
class Config:
    """What `control serve` was started with."""

    state: Path
    access: Access = field(default_factory=Access)
    inventory: Path | None = None
    fleet: Sequence[Worker] = ()
    allowed_hosts: Sequence[str] = ("127.0.0.1", "localhost", "[::1]")
    tick_s: float = 0.25


class _Headers:
    """Adds the security headers to every response (pure ASGI: streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.decode().lower() for k, _ in headers}
                headers += [
                    (k.encode(), v.encode())
                    for k, v in SECURITY_HEADERS.items()
                    if k not in present
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value, every template: agent text is text
        undefined=jinja2.StrictUndefined,
    )
    env.filters["duration"] = _duration
    env.filters["money"] = lambda v: f"${float(v or 0):.2f}"
    env.filters["clock"] = lambda v: (
        "" if v is None else time.strftime("%H:%M:%S", time.localtime(v))
    )
    env.filters["day"] = lambda v: time.strftime("%Y-%m-%d %H:%M", time.localtime(v))
    env.filters["path"] = lambda v: urllib.parse.quote(str(v), safe="")
    return env


def _clock(at: float | None) -> str:
    return "" if at is None else time.strftime("%H:%M:%S", time.localtime(at))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def create_app(config: Config) -> Starlette:
    """The dashboard for one state database (and, with an inventory, its fleet)."""
    return Dashboard(config).app()


class Dashboard:
    """The pages and streams of one dashboard; `app()` is its ASGI application."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.env = _environment()
        self.hub = EventHub(config.state, config.tick_s)
        self.access = config.access
        self.fleet = {w.name: w for w in config.fleet}
        self.pins = {w.name: pins_of(w) for w in config.fleet}
        self.transports: Transports | None = None
        self.transport_lock = threading.Lock()
        self.watch = FleetWatch(config.fleet, self._poll) if config.inventory else None
        self._watching: asyncio.Task[None] | None = None

    def reading(self, read: Callable[[StateStore], Any]) -> Any:
        """`read` on a read-only connection of its own (one per request: no sharing
        across threads, and nothing this process does can write)."""
        store = StateStore.read_only(self.config.state)
        try:
            return read(store)
        finally:
            store.close()

    async def read(self, read: Callable[[StateStore], Any]) -> Any:
        return await asyncio.to_thread(self.reading, read)

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        access = self.access
        signed = access.signed_in(request.cookies.get(COOKIE))
        context.setdefault("stream", "")
        html = self.env.get_template(name).render(
            nav=request.url.path,
            actions=access.actions and access.needs_sign_in and signed,
            csrf=access.csrf() if access.actions and access.token else "",
            sign_out=access.needs_sign_in and signed,
            node_w=NODE_W,
            node_h=NODE_H,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    # -- pages ---------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        data = await self.read(lambda s: model.runs_list(s, time.time()))
        return self.page(request, "runs.html", runs=data, stream="/stream")

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        data = await self.read(lambda s: model.run_page(s, run_id, time.time()))
        stream = "/stream?" + urllib.parse.urlencode({"run": run_id})
        # A big run's page is its graph; its table (as many rows again) on request.
        table = len(data["phases"]) <= TABLE_PHASES or request.query_params.get("table") == "1"
        return self.page(request, "run.html", stream=stream, table=table, **data)

    async def phase(self, request: Request) -> Response:
        run_id, phase_id = request.path_params["run_id"], request.path_params["phase_id"]
        data = await self.read(lambda s: model.phase_page(s, run_id, phase_id))
        log = None
        if any(a["sent"] for a in data["attempts"]) and self.config.inventory is not None:
            log = f"/runs/{_q(run_id)}/phases/{_q(phase_id)}/log"
        stream = "/stream?" + urllib.parse.urlencode({"run": run_id})
        done = request.query_params.get("done") or ""
        note = {"retry": "retry recorded", "cancel": "cancel recorded"}.get(done, "")
        return self.page(request, "phase.html", stream=stream, log=log, note=note, **data)

    async def fleet_view(self, request: Request) -> Response:
        fleet, pins, watch = self.config.fleet, self.pins, self.watch
        polled = watch.reports if watch is not None else {}
        data = await self.read(lambda s: model.fleet_page(s, fleet, pins, time.time(), polled))
        return self.page(
            request,
            "fleet.html",
            workers=data,
            stream="/stream",
            hours=model.ACTIVITY_HOURS,
            polled_at=None if watch is None else watch.polled_at,
            poll_error="" if watch is None else watch.error or "",
        )

    async def costs(self, request: Request) -> Response:
        data = await self.read(lambda s: model.costs_page(s, time.time()))
        return self.page(request, "costs.html", **data)

    # -- live streams ----------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        run_id = request.query_params.get("run")
        if run_id is not None:
            await self.read(lambda s: s.run(run_id))  # a 404 before the stream starts

        def take() -> Any:
            return self.reading(lambda s: model.snapshot(s, run_id, time.time()))

        what = "fleet" if run_id is None else f"run:{run_id}"
        return _event_stream(snapshots(self.hub, what, take, request.is_disconnected))

    def _transports(self) -> Transports:
        if self.transports is None:
            self.transports = Transports(inventory=self.config.inventory)
        return self.transports

    def _fetch(self, attempt: AttemptRow) -> dict[str, Any]:
        with self.transport_lock:  # one connection per worker, shared by the pages
            return fetch_log(self._transports(), self.fleet, attempt, LOG_TAIL_BYTES)

    def _poll(self, workers: Sequence[Worker]) -> Mapping[str, PollResult]:
        with self.transport_lock:
            return self._transports().poll(workers, limit=0)

    async def log(self, request: Request) -> Response:
        """The log tail of a phase's last attempt, sent again each time it grows."""
        run_id, phase_id = request.path_params["run_id"], request.path_params["phase_id"]
        if self.config.inventory is None:
            raise NotFoundError("the dashboard was started without --inventory: no logs")
        attempt = await self.read(lambda s: sent_attempt(s, run_id, phase_id, None))

        async def tail() -> AsyncIterator[str]:
            size = -1
            while not await request.is_disconnected():
                try:
                    answer = await asyncio.to_thread(self._fetch, attempt)
                except SuperagentError as exc:
                    yield sse("problem", {"error": str(exc)})
                    await asyncio.sleep(LOG_TICK_S)
                    continue
                if answer["size"] != size:
                    size = answer["size"]
                    yield sse(
                        "log", {**answer, "worker": attempt.worker, "attempt": attempt.attempt}
                    )
                if answer["state"] not in ("pending", "claimed"):
                    break  # the attempt is over: its log no longer grows
                await asyncio.sleep(LOG_TICK_S)

        return _event_stream(tail())

    # -- actions and signing in --------------------------------------------------------

    async def act(self, request: Request) -> Response:
        run_id, phase_id = request.path_params["run_id"], request.path_params["phase_id"]
        verb = request.path_params["verb"]
        if verb not in ("retry", "cancel"):
            raise NotFoundError(f"no action {verb!r}")
        form = await _form(request)
        why = self.access.may_act(
            request.cookies.get(COOKIE),
            form.get("csrf"),
            request.headers,
            request.headers.get("host", ""),
        )
        if why is not None:
            return PlainTextResponse(f"refused: {why}", status_code=403)

        def change() -> None:
            store = StateStore(self.config.state)  # the one writer, for this one change
            try:
                store.run(run_id)
                if verb == "retry":
                    store.retry_phases(run_id, [phase_id], "retry requested on the dashboard")
                else:
                    store.cancel_phases(run_id, [phase_id], "cancelled on the dashboard")
            finally:
                store.close()

        await asyncio.to_thread(change)
        where = f"/runs/{_q(run_id)}/phases/{_q(phase_id)}?done={verb}"
        return RedirectResponse(where, status_code=303)

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page(request, "login.html", error="")
        form = await _form(request)
        if not self.access.token_matches(form.get("token", "")):
            return self.page(request, "login.html", status=403, error="wrong token")
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(COOKIE, self.access.session(), httponly=True, samesite="strict")
        return answer

    async def logout(self, request: Request) -> Response:
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE)
        return answer

    def _problem(self, status: int) -> Callable[[Request, Exception], Any]:
        async def handle(request: Request, exc: Exception) -> Response:
            return self.page(request, "problem.html", status=status, problem=str(exc))

        return handle

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.hub.start()
        if self.watch is not None:
            self._watching = asyncio.create_task(self.watch.run())
        try:
            yield
        finally:
            if self._watching is not None:
                self._watching.cancel()
            await self.hub.stop()
            if self.transports is not None:
                self.transports.close()

    def app(self) -> Starlette:
        routes = [
            Route("/", self.runs),
            Route("/runs/{run_id}", self.run),
            Route("/runs/{run_id}/phases/{phase_id}", self.phase),
            Route("/runs/{run_id}/phases/{phase_id}/log", self.log),
            Route("/runs/{run_id}/phases/{phase_id}/{verb}", self.act, methods=["POST"]),
            Route("/fleet", self.fleet_view),
            Route("/costs", self.costs),
            Route("/stream", self.stream),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(
            routes=routes,
            middleware=[
                Middleware(_Headers),
                Middleware(TrustedHostMiddleware, allowed_hosts=list(self.config.allowed_hosts)),
                Middleware(_SignIn, access=self.access),
            ],
            exception_handlers={
                NotFoundError: self._problem(404),
                ConflictError: self._problem(409),
                SuperagentError: self._problem(503),
            },
            lifespan=self.lifespan,
        )
        app.state.hub = self.hub
        return app


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields, first value each (no multipart: nothing is uploaded)."""
    body = (await request.body())[:65536].decode("utf-8", "replace")
    return {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}


class _SignIn:
    """With a token, nothing but the sign-in page and the assets without a session."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.access.needs_sign_in:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        if path.startswith(OPEN_PATHS) or self.access.signed_in(request.cookies.get(COOKIE)):
            await self.app(scope, receive, send)
            return
        refused: Response
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            refused = RedirectResponse("/login", status_code=303)
        else:
            refused = PlainTextResponse("refused: sign in with the dashboard token", 401)
        await refused(scope, receive, send)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _event_stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"x-accel-buffering": "no"}
    )
