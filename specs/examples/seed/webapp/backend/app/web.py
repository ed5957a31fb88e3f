"""A dependency-free stand-in for the web framework (FastAPI in production).

Routes with integer path parameters, JSON bodies checked against a declared schema (422),
the error format of docs/errors.md, a session in a signed HTTP-only cookie, a WSGI entry
point, an OpenAPI description of the routes, and a test client that calls the app in-process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

SESSION_COOKIE = "session"
SESSION_SECONDS = 14 * 24 * 3600
_OPENAPI_TYPES = {str: "string", int: "integer", bool: "boolean", type(None): "null"}


class HTTPError(Exception):
    """An error answer: `status`, and the body of docs/errors.md."""

    def __init__(self, status: int, code: str, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def invalid(field_name: str, problem: str) -> HTTPError:
    return HTTPError(
        422, "invalid", "the request is not valid", [{"field": field_name, "problem": problem}]
    )


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, int]
    query: dict[str, str]
    json: dict[str, Any]
    session: dict[str, Any]
    db: sqlite3.Connection


def require_user(request: Request) -> int:
    """The id of the logged-in user, or 401."""
    user_id = request.session.get("user_id")
    if not isinstance(user_id, int):
        raise HTTPError(401, "unauthenticated", "log in first")
    return user_id


@dataclass
class Route:
    method: str
    path: str
    handler: Callable[[Request], Any]
    body: dict[str, Any] | None  # {"name": type, "optional?": type}
    status: int
    errors: tuple[int, ...]
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>\\d+)", self.path) + "$")


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, body=None, status=200, errors=()) -> Callable:
        def register(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
            self.routes.append(Route(method, path, handler, body, status, tuple(errors)))
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable:
        return self.route("POST", path, **options)

    def patch(self, path: str, **options: Any) -> Callable:
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable:
        return self.route("DELETE", path, **options)


def check_body(data: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """`data` if it is an object with the fields of `schema`, else 422."""
    if not isinstance(data, dict):
        raise invalid("body", "expected a JSON object")
    fields = {name.rstrip("?"): (kind, not name.endswith("?")) for name, kind in schema.items()}
    for name, value in data.items():
        if name not in fields:
            raise invalid(name, "unknown field")
        kind = fields[name][0]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            wanted = json_type(kind)
            raise invalid(
                name, "expected " + (wanted if isinstance(wanted, str) else " or ".join(wanted))
            )
    for name, (_, required) in fields.items():
        if required and name not in data:
            raise invalid(name, "required")
    return data


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        raise invalid("body", "not JSON") from None


def json_type(kind: Any) -> str | list[str]:
    kinds = getattr(kind, "__args__", (kind,))
    names = [_OPENAPI_TYPES[k] for k in kinds]
    return names[0] if len(names) == 1 else names


@dataclass
class Response:
    status: int
    body: Any = None
    cookies: list[str] = field(default_factory=list)


class App:
    def __init__(self, db_path: str, secret: str) -> None:
        self.db_path, self.secret, self.routes = db_path, secret.encode(), []

    def include(self, router: Router) -> App:
        self.routes.extend(router.routes)
        return self

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    # --- sessions: base64(JSON).signature, with an expiry inside ---
    def sign_session(self, session: dict[str, Any]) -> str:
        payload = {**session, "exp": int(time.time()) + SESSION_SECONDS}
        data = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        return data + "." + hmac.new(self.secret, data.encode(), hashlib.sha256).hexdigest()

    def read_session(self, value: str) -> dict[str, Any]:
        data, _, signature = value.partition(".")
        expected = hmac.new(self.secret, data.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return {}
        try:
            session = json.loads(base64.urlsafe_b64decode(data))
        except ValueError:
            return {}
        return session if session.pop("exp", 0) > time.time() else {}

    def handle(self, method: str, target: str, body: bytes = b"", cookie: str = "") -> Response:
        """Answer one request; an HTTPError becomes its error answer, anything else raises."""
        path, _, query = target.partition("?")
        jar: SimpleCookie = SimpleCookie(cookie)
        session = self.read_session(jar[SESSION_COOKIE].value) if SESSION_COOKIE in jar else {}
        before = dict(session)
        try:
            route, params = self._match(method, path)
            data = check_body(_parse(body), route.body) if route.body is not None else {}
            conn = self.connect()
            try:
                with conn:  # commits, or rolls back when the handler raises
                    request = Request(
                        method, path, params, dict(parse_qsl(query)), data, session, conn
                    )
                    result = route.handler(request)
            finally:
                conn.close()
        except HTTPError as error:
            return Response(error.status, error.body())
        response = Response(204 if result is None else route.status, result)
        if session != before:
            value, age = (self.sign_session(session), SESSION_SECONDS) if session else ("", 0)
            response.cookies.append(
                f"{SESSION_COOKIE}={value}; Max-Age={age}; Path=/; HttpOnly; SameSite=Lax"
            )
        return response

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, int]]:
        found = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        for route, match in found:
            if route.method == method:
                return route, {k: int(v) for k, v in match.groupdict().items()}
        if found:
            raise HTTPError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise HTTPError(404, "not_found", f"no route for {path}")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        """The WSGI entry point."""
        target = environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        try:
            response = self.handle(
                environ["REQUEST_METHOD"], target, body, environ.get("HTTP_COOKIE", "")
            )
        except Exception:  # a bug: log it, answer 500 in the usual format
            traceback.print_exc()
            response = Response(500, HTTPError(500, "internal", "internal error").body())
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        headers = [("Content-Type", "application/json")] if payload else []
        headers += [("Set-Cookie", c) for c in response.cookies]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [payload]

    def openapi(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for route in self.routes:
            responses = {
                str(s): {"description": HTTPStatus(s).phrase} for s in (route.status, *route.errors)
            }
            operation: dict[str, Any] = {
                "operationId": route.handler.__name__,
                "responses": responses,
            }
            if route.body is not None:
                properties = {n.rstrip("?"): {"type": json_type(k)} for n, k in route.body.items()}
                required = [n for n in route.body if not n.endswith("?")]
                schema = {
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": False,
                }
                operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
            paths.setdefault(route.path, {})[route.method.lower()] = operation
        return {
            "openapi": "3.1.0",
            "info": {"title": "tasks-webapp", "version": "0.1.0"},
            "paths": paths,
        }


@dataclass
class TestResponse:
    status: int
    json: Any


class TestClient:
    """Calls the app in-process and keeps its session cookie, like a browser."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, app: App) -> None:
        self.app, self.cookie = app, ""

    def login_as(self, user_id: int) -> None:
        self.cookie = f"{SESSION_COOKIE}={self.app.sign_session({'user_id': user_id})}"

    def request(self, method: str, target: str, json_body: Any = None) -> TestResponse:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        response = self.app.handle(method, target, body, self.cookie)
        for cookie in response.cookies:
            value = cookie.split(";", 1)[0]
            self.cookie = "" if value == f"{SESSION_COOKIE}=" else value
        return TestResponse(response.status, response.body)

    def get(self, target: str) -> TestResponse:
        return self.request("GET", target)

    def post(self, target: str, json_body: Any = None) -> TestResponse:
        return self.request("POST", target, json_body)

    def patch(self, target: str, json_body: Any = None) -> TestResponse:
        return self.request("PATCH", target, json_body)

    def delete(self, target: str) -> TestResponse:
        return self.request("DELETE", target)
