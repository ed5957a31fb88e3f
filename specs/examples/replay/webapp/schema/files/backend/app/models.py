"""The records of the task tracker, as the migrations in backend/migrations create them.

SQLAlchemy 2 models in production; in this demo repository, plain dataclasses read from
sqlite3 rows (the tables are in backend/migrations/versions/).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any, Self


class Status(StrEnum):
    TODO = "todo"
    DOING = "doing"
    DONE = "done"


class Record:
    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class User(Record):
    id: int
    email: str
    created_at: str


@dataclass(frozen=True)
class Project(Record):
    id: int
    owner_id: int
    name: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Task(Record):
    id: int
    project_id: int
    title: str
    status: Status
    assignee_id: int | None
    created_at: str
    updated_at: str
