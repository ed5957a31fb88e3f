"""The app: the routers of backend/app put together, and a development server.

python -m backend.app.main --db tasks.sqlite3 --migrate --port 8000 [--static frontend/dist]
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import secrets
import sqlite3
from pathlib import Path
from wsgiref.simple_server import make_server

from backend.app.web import App


def create_app(db_path: str, secret: str) -> App:
    from backend.app import auth, tasks  # noqa: PLC0415 - the routers the phases add

    return App(db_path, secret).include(auth.router).include(tasks.router)


def with_static(app: App, directory: Path):
    """Serve the files of `directory` (the built frontend) to GETs naming one; the rest to `app`."""

    def serve(environ, start_response):
        file = (directory / environ.get("PATH_INFO", "/").lstrip("/")).resolve()
        if file.is_dir():
            file = file / "index.html"
        if (
            environ["REQUEST_METHOD"] != "GET"
            or not file.is_relative_to(directory)
            or not file.is_file()
        ):
            return app(environ, start_response)
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        start_response("200 OK", [("Content-Type", kind)])
        return [file.read_bytes()]

    return serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="tasks.sqlite3")
    parser.add_argument("--migrate", action="store_true", help="upgrade the database first")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 takes a free port")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--static", type=Path, help="also serve this directory")
    args = parser.parse_args(argv)
    if args.migrate:
        from backend.migrations.runner import upgrade  # noqa: PLC0415

        with sqlite3.connect(args.db) as conn:
            upgrade(conn)
    secret = os.environ.get("TASKS_SECRET") or secrets.token_hex(32)
    app = create_app(args.db, secret)
    wsgi = with_static(app, args.static.resolve()) if args.static else app
    with make_server(args.host, args.port, wsgi) as server:
        port = server.server_address[1]
        if args.port_file:
            args.port_file.with_suffix(".tmp").write_text(str(port))
            args.port_file.with_suffix(".tmp").replace(args.port_file)
        print(f"tasks-webapp on http://{args.host}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
