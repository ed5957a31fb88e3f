"""Sign-up, log-in and log-out through the test client, on a SQLite database."""

import pytest
from backend.app import auth
from backend.app.web import App, TestClient

ADA = {"email": "ada@example.com", "password": "correct horse"}


@pytest.fixture
def client(db):
    return TestClient(App(db, "test-secret").include(auth.router))


def test_signup_creates_the_account_and_logs_in(client, db):
    answer = client.post("/auth/signup", ADA)
    assert answer.status == 201
    assert answer.json == {"id": 1, "email": "ada@example.com"}
    assert client.app.read_session(client.cookie.split("=", 1)[1]) == {"user_id": 1}


def test_the_password_is_stored_hashed(client):
    client.post("/auth/signup", ADA)
    with client.app.connect() as conn:
        stored = conn.execute("SELECT password_hash FROM users").fetchone()[0]
    assert ADA["password"] not in stored
    assert auth.verify_password(ADA["password"], stored)
    assert not auth.verify_password("wrong horse", stored)


def test_a_taken_email_is_409_whatever_its_case(client):
    client.post("/auth/signup", ADA)
    answer = client.post("/auth/signup", {**ADA, "email": "Ada@Example.com"})
    assert answer.status == 409
    assert answer.json["error"]["code"] == "email_taken"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ada", "password": "correct horse"}, "email"),
        ({"email": "ada@example.com", "password": "short"}, "password"),
        ({"email": "ada@example.com"}, "password"),
    ],
)
def test_a_bad_signup_is_422(client, body, field):
    answer = client.post("/auth/signup", body)
    assert answer.status == 422
    assert answer.json["error"]["details"][0]["field"] == field


def test_login_and_logout(client):
    client.post("/auth/signup", ADA)
    assert client.post("/auth/logout").status == 204
    assert client.cookie == ""
    answer = client.post("/auth/login", {**ADA, "email": "ADA@example.com"})
    assert (answer.status, answer.json) == (200, {"id": 1, "email": "ada@example.com"})
    assert client.cookie.startswith("session=")


@pytest.mark.parametrize("email", ["ada@example.com", "nobody@example.com"])
def test_bad_credentials_are_401(client, email):
    client.post("/auth/signup", ADA)
    client.post("/auth/logout")
    answer = client.post("/auth/login", {"email": email, "password": "wrong horse"})
    assert answer.status == 401
    assert answer.json["error"]["code"] == "bad_credentials"
    assert client.cookie == ""
