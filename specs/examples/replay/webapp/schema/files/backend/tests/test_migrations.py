"""The migrations upgrade to head, downgrade to base and upgrade again.

PostgreSQL 16 in Docker in production; the demo repository migrates SQLite, which needs no
service, with the same revisions.
"""

import sqlite3

import pytest
from backend.app.models import Status, Task
from backend.migrations.runner import current, downgrade, revisions, upgrade


def tables(conn):
    rows = conn.execute(
        "SELECT name FROM sqlite_master"
        " WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'"
    )
    return {name for (name,) in rows} - {"schema_version"}


@pytest.fixture
def conn():
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    yield conn
    conn.close()


def test_the_revisions_form_one_chain():
    assert [m.revision for m in revisions()] == ["0001", "0002"]


def test_upgrade_downgrade_upgrade(conn):
    upgrade(conn)
    assert current(conn) == "0002"
    schema = tables(conn)
    assert {"users", "projects", "tasks", "tasks_by_project_status"} <= schema
    downgrade(conn)
    assert current(conn) is None
    assert tables(conn) == set()
    upgrade(conn)
    assert tables(conn) == schema


def test_step_by_step(conn):
    upgrade(conn, "0001")
    assert current(conn) == "0001"
    assert "tasks_by_project_status" not in tables(conn)
    upgrade(conn)
    downgrade(conn, "0001")
    assert current(conn) == "0001"
    assert "tasks" in tables(conn)


def test_the_constraints_hold(conn):
    upgrade(conn)
    conn.execute("INSERT INTO users (email, password_hash) VALUES ('ada@example.com', 'x')")
    with pytest.raises(sqlite3.IntegrityError):  # e-mails are unique whatever their case
        conn.execute("INSERT INTO users (email, password_hash) VALUES ('ADA@example.com', 'x')")
    conn.execute("INSERT INTO projects (owner_id, name) VALUES (1, 'Launch')")
    conn.execute(
        "INSERT INTO tasks (project_id, title, assignee_id) VALUES (1, 'Write the spec', 1)"
    )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO tasks (project_id, title, status) VALUES (1, 'x', 'blocked')")
    task = Task.from_row(conn.execute("SELECT * FROM tasks").fetchone())
    assert (task.title, task.status, task.assignee_id) == ("Write the spec", Status.TODO, 1)
    conn.execute("DELETE FROM users")  # a user's projects and their tasks go with the user
    assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
