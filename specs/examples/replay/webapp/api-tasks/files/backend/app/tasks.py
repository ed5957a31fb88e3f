"""Projects and their tasks: CRUD, cursor pagination, filters; errors as in docs/errors.md.

A user sees only their own projects: anybody else's answer 404, as if they did not exist.
"""

from __future__ import annotations

from backend.app.models import Project, Status, Task
from backend.app.web import HTTPError, Request, Router, invalid, require_user

router = Router()
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
TASK_FIELDS = {"title": str, "status?": str, "assignee_id?": int | None}
TASK_CHANGES = {"title?": str, "status?": str, "assignee_id?": int | None}


def _page(request: Request) -> tuple[int, int]:
    """(limit, cursor) from the query: the cursor is the id of the last item seen."""
    try:
        limit = int(request.query.get("limit", DEFAULT_LIMIT))
        cursor = int(request.query.get("cursor", 0))
    except ValueError:
        raise invalid("limit" if "limit" in request.query else "cursor", "not an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"between 1 and {MAX_LIMIT}")
    return limit, cursor


def _paged(rows: list, limit: int, record: type) -> dict:
    items = [record.from_row(row).to_json() for row in rows[:limit]]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if len(rows) > limit else None}


def _project(request: Request) -> Project:
    owner, project_id = require_user(request), request.params["project_id"]
    row = request.db.execute(
        "SELECT * FROM projects WHERE id = ? AND owner_id = ?", (project_id, owner)
    ).fetchone()
    if row is None:
        raise HTTPError(404, "not_found", f"project {project_id} does not exist")
    return Project.from_row(row)


def _task(request: Request) -> Task:
    project, task_id = _project(request), request.params["task_id"]
    row = request.db.execute(
        "SELECT * FROM tasks WHERE id = ? AND project_id = ?", (task_id, project.id)
    ).fetchone()
    if row is None:
        raise HTTPError(404, "not_found", f"task {task_id} does not exist in project {project.id}")
    return Task.from_row(row)


def _checked(request: Request, changes: dict) -> dict:
    if "title" in changes and not 1 <= len(changes["title"].strip()) <= 200:
        raise invalid("title", "between 1 and 200 characters")
    if "status" in changes and changes["status"] not in set(Status):
        raise invalid("status", "one of " + ", ".join(Status))
    assignee = changes.get("assignee_id")
    if (
        assignee is not None
        and not request.db.execute("SELECT 1 FROM users WHERE id = ?", (assignee,)).fetchone()
    ):
        raise invalid("assignee_id", f"user {assignee} does not exist")
    return {k: v.strip() if k == "title" else v for k, v in changes.items()}


@router.get("/projects", errors=(401, 422))
def list_projects(request: Request) -> dict:
    owner, (limit, cursor) = require_user(request), _page(request)
    rows = request.db.execute(
        "SELECT * FROM projects WHERE owner_id = ? AND id > ? ORDER BY id LIMIT ?",
        (owner, cursor, limit + 1),
    ).fetchall()
    return _paged(rows, limit, Project)


@router.post("/projects", body={"name": str}, status=201, errors=(401, 422))
def create_project(request: Request) -> dict:
    owner, name = require_user(request), request.json["name"].strip()
    if not 1 <= len(name) <= 100:
        raise invalid("name", "between 1 and 100 characters")
    cursor = request.db.execute(
        "INSERT INTO projects (owner_id, name) VALUES (?, ?)", (owner, name)
    )
    return Project.from_row(
        request.db.execute("SELECT * FROM projects WHERE id = ?", (cursor.lastrowid,)).fetchone()
    ).to_json()


@router.get("/projects/{project_id}", errors=(401, 404))
def get_project(request: Request) -> dict:
    return _project(request).to_json()


@router.patch("/projects/{project_id}", body={"name?": str}, errors=(401, 404, 422))
def update_project(request: Request) -> dict:
    project = _project(request)
    name = request.json.get("name", project.name).strip()
    if not 1 <= len(name) <= 100:
        raise invalid("name", "between 1 and 100 characters")
    request.db.execute(
        "UPDATE projects SET name = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ?",
        (name, project.id),
    )
    return _project(request).to_json()


@router.delete("/projects/{project_id}", status=204, errors=(401, 404))
def delete_project(request: Request) -> None:
    request.db.execute("DELETE FROM projects WHERE id = ?", (_project(request).id,))


@router.get("/projects/{project_id}/tasks", errors=(401, 404, 422))
def list_tasks(request: Request) -> dict:
    project, (limit, cursor) = _project(request), _page(request)
    where, values = ["project_id = ?", "id > ?"], [project.id, cursor]
    if "status" in request.query:
        _checked(request, {"status": request.query["status"]})
        where.append("status = ?")
        values.append(request.query["status"])
    if "assignee" in request.query:
        if not request.query["assignee"].isdigit():
            raise invalid("assignee", "not a user id")
        where.append("assignee_id = ?")
        values.append(int(request.query["assignee"]))
    sql = f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
    return _paged(request.db.execute(sql, (*values, limit + 1)).fetchall(), limit, Task)


@router.post("/projects/{project_id}/tasks", body=TASK_FIELDS, status=201, errors=(401, 404, 422))
def create_task(request: Request) -> dict:
    project, task = _project(request), _checked(request, request.json)
    cursor = request.db.execute(
        "INSERT INTO tasks (project_id, title, status, assignee_id) VALUES (?, ?, ?, ?)",
        (project.id, task["title"], task.get("status", Status.TODO), task.get("assignee_id")),
    )
    return Task.from_row(
        request.db.execute("SELECT * FROM tasks WHERE id = ?", (cursor.lastrowid,)).fetchone()
    ).to_json()


@router.get("/projects/{project_id}/tasks/{task_id}", errors=(401, 404))
def get_task(request: Request) -> dict:
    return _task(request).to_json()


@router.patch("/projects/{project_id}/tasks/{task_id}", body=TASK_CHANGES, errors=(401, 404, 422))
def update_task(request: Request) -> dict:
    task, changes = _task(request), _checked(request, request.json)
    for column, value in changes.items():  # the columns are the schema's fixed names
        request.db.execute(
            f"UPDATE tasks SET {column} = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ?",
            (value, task.id),
        )
    return _task(request).to_json()


@router.delete("/projects/{project_id}/tasks/{task_id}", status=204, errors=(401, 404))
def delete_task(request: Request) -> None:
    request.db.execute("DELETE FROM tasks WHERE id = ?", (_task(request).id,))
