"""Fixtures shared by the backend tests."""

import sqlite3

import pytest
from backend.migrations.runner import upgrade


@pytest.fixture
def db(tmp_path):
    """The path of a fresh SQLite database upgraded to the head revision."""
    path = tmp_path / "tasks.sqlite3"
    with sqlite3.connect(path) as conn:
        upgrade(conn)
    conn.close()
    return str(path)
