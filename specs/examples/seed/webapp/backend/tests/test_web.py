"""The framework stand-in: routing, body checks, errors and the session cookie."""

import pytest

from backend.app.web import App, HTTPError, Router, TestClient

router = Router()


@router.post("/things/{thing_id}", body={"name": str, "size?": int | None}, status=201)
def make_thing(request):
    if request.params["thing_id"] == 0:
        raise HTTPError(404, "not_found", "thing 0 does not exist")
    request.session["seen"] = request.params["thing_id"]
    return {"id": request.params["thing_id"], **request.json}


@pytest.fixture
def client(tmp_path):
    return TestClient(App(str(tmp_path / "web.sqlite3"), "test-secret").include(router))


def test_a_route_gets_its_params_and_body(client):
    answer = client.post("/things/3", {"name": "box", "size": None})
    assert (answer.status, answer.json) == (201, {"id": 3, "name": "box", "size": None})
    assert client.cookie.startswith("session=")


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({}, "name", "required"),
        ({"name": 1}, "name", "expected string"),
        ({"name": "a", "size": True}, "size", "expected integer or null"),
        ({"name": "a", "colour": "red"}, "colour", "unknown field"),
        ([], "body", "expected a JSON object"),
    ],
)
def test_a_bad_body_is_422_with_the_field(client, body, field, problem):
    answer = client.post("/things/1", body)
    assert answer.status == 422
    assert answer.json["error"]["details"] == [{"field": field, "problem": problem}]


def test_errors_have_the_documented_format(client):
    assert client.post("/things/0", {"name": "x"}).json["error"]["code"] == "not_found"
    assert client.get("/things/1").status == 405
    assert client.get("/nothing").json["error"]["code"] == "not_found"


def test_a_forged_session_is_ignored(tmp_path):
    app = App(str(tmp_path / "web.sqlite3"), "test-secret")
    signed = app.sign_session({"user_id": 1})
    assert app.read_session(signed) == {"user_id": 1}
    assert app.read_session(signed[:-1] + ("1" if signed.endswith("0") else "0")) == {}
    assert App(app.db_path, "other-secret").read_session(signed) == {}
