"""Apply the revisions of backend/migrations/versions (Alembic in production).

    python -m backend.migrations.runner --db tasks.sqlite3 upgrade [head|REVISION]
    python -m backend.migrations.runner --db tasks.sqlite3 downgrade [base|REVISION]

The applied revision is kept in the table schema_version, as alembic_version would.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
from types import ModuleType

from backend.migrations import versions


def revisions() -> list[ModuleType]:
    """The revisions from the first to the head, following down_revision."""
    modules = [
        importlib.import_module(f"{versions.__name__}.{m.name}")
        for m in pkgutil.iter_modules(versions.__path__)
    ]
    by_parent = {m.down_revision: m for m in modules}
    if len(by_parent) != len(modules):
        raise RuntimeError("two revisions share a down_revision: the history has two heads")
    chain, parent = [], None
    while parent in by_parent:
        chain.append(by_parent[parent])
        parent = chain[-1].revision
    if len(chain) != len(modules):
        raise RuntimeError("some revisions are not on the chain from the first one")
    return chain


def current(conn: sqlite3.Connection) -> str | None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (revision TEXT NOT NULL)")
    row = conn.execute("SELECT revision FROM schema_version").fetchone()
    return row[0] if row else None


def _set(conn: sqlite3.Connection, revision: str | None) -> None:
    conn.execute("DELETE FROM schema_version")
    if revision is not None:
        conn.execute("INSERT INTO schema_version (revision) VALUES (?)", (revision,))
    conn.commit()


def upgrade(conn: sqlite3.Connection, target: str = "head") -> None:
    chain = revisions()
    ids = [m.revision for m in chain]
    start = ids.index(current(conn)) + 1 if current(conn) else 0
    stop = len(ids) if target == "head" else ids.index(target) + 1
    for module in chain[start:stop]:
        module.upgrade(conn)
        _set(conn, module.revision)


def downgrade(conn: sqlite3.Connection, target: str = "base") -> None:
    chain = revisions()
    ids = [m.revision for m in chain]
    start = ids.index(current(conn)) if current(conn) else -1
    stop = -1 if target == "base" else ids.index(target)
    for module in reversed(chain[stop + 1 : start + 1]):
        module.downgrade(conn)
        _set(conn, module.down_revision)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Upgrade or downgrade the database schema.")
    parser.add_argument("--db", default="tasks.sqlite3")
    parser.add_argument("command", choices=["upgrade", "downgrade", "current"])
    parser.add_argument("target", nargs="?")
    args = parser.parse_args(argv)
    with sqlite3.connect(args.db) as conn:
        if args.command == "upgrade":
            upgrade(conn, args.target or "head")
        elif args.command == "downgrade":
            downgrade(conn, args.target or "base")
        print(current(conn) or "base")


if __name__ == "__main__":
    main()
