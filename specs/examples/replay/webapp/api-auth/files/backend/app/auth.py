"""Sign-up, log-in and log-out; the session is a signed HTTP-only cookie (backend.app.web).

Passwords are hashed with scrypt from the standard library (argon2 in production): a
memory-hard hash with a random salt per password, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3

from backend.app.models import User
from backend.app.web import HTTPError, Request, Router, invalid

router = Router()
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8
CREDENTIALS = {"email": str, "password": str}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


_NOBODY = hash_password(secrets.token_hex(16))  # checked for unknown e-mails: same timing


def _user(row: sqlite3.Row) -> dict:
    user = User.from_row(row).to_json()
    return {"id": user["id"], "email": user["email"]}


@router.post("/auth/signup", body=CREDENTIALS, status=201, errors=(409, 422))
def signup(request: Request) -> dict:
    email, password = request.json["email"].strip().lower(), request.json["password"]
    if not EMAIL.match(email):
        raise invalid("email", "not an e-mail address")
    if len(password) < MIN_PASSWORD:
        raise invalid("password", f"shorter than {MIN_PASSWORD} characters")
    try:
        cursor = request.db.execute(
            "INSERT INTO users (email, password_hash) VALUES (?, ?)",
            (email, hash_password(password)),
        )
    except sqlite3.IntegrityError:
        raise HTTPError(409, "email_taken", f"{email} already has an account") from None
    request.session["user_id"] = cursor.lastrowid
    return _user(
        request.db.execute("SELECT * FROM users WHERE id = ?", (cursor.lastrowid,)).fetchone()
    )


@router.post("/auth/login", body=CREDENTIALS, errors=(401, 422))
def login(request: Request) -> dict:
    email = request.json["email"].strip().lower()
    row = request.db.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
    stored = row["password_hash"] if row else _NOBODY
    if not verify_password(request.json["password"], stored) or row is None:
        raise HTTPError(401, "bad_credentials", "wrong e-mail or password")
    request.session.clear()
    request.session["user_id"] = row["id"]
    return _user(row)


@router.post("/auth/logout", status=204)
def logout(request: Request) -> None:
    request.session.clear()
