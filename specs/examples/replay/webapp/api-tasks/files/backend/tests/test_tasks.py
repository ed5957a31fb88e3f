"""Projects and tasks through the test client: CRUD, pagination, filters and errors."""

import sqlite3

import pytest
from backend.app import tasks
from backend.app.web import App, TestClient


@pytest.fixture
def client(db):
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO users (email, password_hash) VALUES (?, 'not-a-hash')",
            [("ada@example.com",), ("bob@example.com",)],
        )
    conn.close()
    client = TestClient(App(db, "test-secret").include(tasks.router))
    client.login_as(1)
    return client


@pytest.fixture
def project(client):
    return client.post("/projects", {"name": "Launch"}).json


def test_project_crud(client):
    created = client.post("/projects", {"name": " Launch "})
    assert created.status == 201
    assert created.json["name"] == "Launch"
    url = f"/projects/{created.json['id']}"
    assert client.get(url).json == created.json
    assert client.patch(url, {"name": "Lift-off"}).json["name"] == "Lift-off"
    assert client.delete(url).status == 204
    assert client.get(url).status == 404


def test_task_crud_and_moves(client, project):
    url = f"/projects/{project['id']}/tasks"
    task = client.post(url, {"title": "Write the spec", "assignee_id": 2})
    assert task.status == 201
    assert (task.json["status"], task.json["assignee_id"]) == ("todo", 2)
    moved = client.patch(f"{url}/{task.json['id']}", {"status": "done", "assignee_id": None})
    assert (moved.json["status"], moved.json["assignee_id"]) == ("done", None)
    assert client.delete(f"{url}/{task.json['id']}").status == 204
    assert client.get(url).json == {"items": [], "next_cursor": None}


def test_pagination_follows_the_cursor(client):
    for n in range(5):
        client.post("/projects", {"name": f"P{n}"})
    first = client.get("/projects?limit=2").json
    assert [p["name"] for p in first["items"]] == ["P0", "P1"]
    rest = client.get(f"/projects?limit=2&cursor={first['next_cursor']}").json
    assert [p["name"] for p in rest["items"]] == ["P2", "P3"]
    last = client.get(f"/projects?limit=2&cursor={rest['next_cursor']}").json
    assert ([p["name"] for p in last["items"]], last["next_cursor"]) == (["P4"], None)


def test_tasks_filter_by_status_and_assignee(client, project):
    url = f"/projects/{project['id']}/tasks"
    for title, status, assignee in [("a", "todo", 1), ("b", "done", 2), ("c", "done", 1)]:
        client.post(url, {"title": title, "status": status, "assignee_id": assignee})

    def titles(query):
        return [t["title"] for t in client.get(f"{url}?{query}").json["items"]]

    assert titles("status=done") == ["b", "c"]
    assert titles("assignee=1") == ["a", "c"]
    assert titles("status=done&assignee=1") == ["c"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/projects", {"name": ""}, "name"),
        ("GET", "/projects?limit=0", None, "limit"),
        ("POST", "/projects/1/tasks", {"title": "x", "status": "blocked"}, "status"),
        ("POST", "/projects/1/tasks", {"title": "x", "assignee_id": 99}, "assignee_id"),
        ("GET", "/projects/1/tasks?status=blocked", None, "status"),
    ],
)
def test_invalid_requests_are_422(client, project, method, path, body, field):
    answer = client.request(method, path, body)
    assert answer.status == 422
    assert answer.json["error"]["code"] == "invalid"
    assert answer.json["error"]["details"][0]["field"] == field


def test_other_users_projects_are_404_and_no_session_is_401(client, project):
    client.login_as(2)
    answer = client.get(f"/projects/{project['id']}")
    assert answer.status == 404
    assert answer.json == {
        "error": {"code": "not_found", "message": "project 1 does not exist", "details": []}
    }
    assert client.get(f"/projects/{project['id']}/tasks/1").status == 404
    client.cookie = ""
    assert client.get("/projects").status == 401
