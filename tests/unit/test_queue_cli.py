"""`control queue ...` end to end: JSON in and out, errors as one line and an exit code."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control.cli import app
from control.errors import ExitCode
from control.queue import Queue
from tests.injection import big_text, corpus
from tests.support import need

runner = CliRunner()


def run(*args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["queue", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "queue.db"
    code, _, err = run("init", "--db", str(path))
    assert code == 0, err
    return str(path)


def test_init_creates_the_directory_and_reports_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "queue.db"
    code, out, _ = run("init", "--db", str(path), "--json")
    assert code == 0
    assert json.loads(out) == {"db": str(path), "schema_version": 2}


def test_db_defaults_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.db"
    result = runner.invoke(app, ["queue", "init"], env={"SUPERAGENT_QUEUE_DB": str(path)})
    assert result.exit_code == 0 and path.exists()


def test_full_cycle_through_the_cli(db: str) -> None:
    code, out, _ = run("enqueue", "--db", db, "--key", "r/api/1", "--json", stdin='{"p": 1}')
    assert (code, json.loads(out)) == (0, {"id": 1, "duplicate": False, "state": "pending"})
    code, out, _ = run("enqueue", "--db", db, "--key", "r/api/1", "--json", stdin='{"p": 1}')
    assert json.loads(out)["duplicate"] is True
    code, out, _ = run("claim", "--db", db, "--worker", "w1", "--lease", "60", "--json")
    claimed = json.loads(out)
    assert (claimed["id"], claimed["fence"], claimed["payload"]) == (1, 1, {"p": 1})
    code, out, _ = run("renew", "--db", db, "1", "--fence", "1", "--json")
    assert json.loads(out)["cancel_requested"] is False
    code, out, _ = run("complete", "--db", db, "1", "--fence", "1", "--json", stdin='{"ok": 1}')
    assert json.loads(out) == {"accepted": True, "state": "done"}
    code, out, _ = run("responses", "--db", db, "--json")
    assert [m["response"] for m in json.loads(out)] == [{"ok": 1}]
    code, out, _ = run("ack", "--db", db, "1", "--json")
    assert json.loads(out) == {"acked": 1}
    code, out, _ = run("responses", "--db", db, "--json")
    assert json.loads(out) == []
    code, out, _ = run("stats", "--db", db, "--json")
    assert json.loads(out)["by_state"]["done"] == 1
    code, out, _ = run("claim", "--db", db, "--worker", "w1", "--json")
    assert (code, json.loads(out)) == (0, None)


def test_fail_cancel_requeue_list_show_prune(db: str) -> None:
    run("enqueue", "--db", db, stdin='{"p": 1}')
    run("enqueue", "--db", db, stdin='{"p": 2}')
    run("claim", "--db", db, "--worker", "w")
    _, out, _ = run("fail", "--db", db, "1", "--fence", "1", "--reason", "tests red", "--json")
    assert json.loads(out) == {"accepted": True, "state": "failed"}
    _, out, _ = run("cancel", "--db", db, "2", "--json")
    assert json.loads(out) == {"state": "cancelled"}
    _, out, _ = run("requeue", "--db", db, "1", "--json")
    assert json.loads(out) == {"requeued": 1}
    _, out, _ = run("list", "--db", db, "--only", "pending", "--json")
    assert [m["id"] for m in json.loads(out)] == [1]
    _, out, _ = run("show", "--db", db, "2", "--json")
    assert json.loads(out)["reason"] == "cancelled while pending"
    assert run("ack", "--db", db, "2")[0] == 0
    _, out, _ = run("prune", "--db", db, "--older-than-days", "0", "--json")
    assert json.loads(out) == {"pruned": 1}


def test_fail_reads_a_response_file(db: str, tmp_path: Path) -> None:
    response = tmp_path / "response.json"
    response.write_text('{"verify": [{"exit": 1}]}')
    run("enqueue", "--db", db, stdin="{}")
    run("claim", "--db", db, "--worker", "w")
    code, _, _ = run(
        "fail", "--db", db, "1", "--fence", "1", "--reason", "red", "-f", str(response)
    )
    assert code == 0
    _, out, _ = run("show", "--db", db, "1", "--json")
    assert json.loads(out)["response"] == {"verify": [{"exit": 1}]}


def test_human_output_renders(db: str) -> None:
    run("enqueue", "--db", db, stdin='{"p": 1}')
    for args in (["list"], ["stats"], ["show", "1"], ["claim", "--worker", "w"], ["responses"]):
        code, out, err = run(args[0], "--db", db, *args[1:])
        assert code == 0, err
        assert out.strip()


@pytest.mark.parametrize(
    ("args", "stdin", "code", "message"),
    [
        (["enqueue"], "not json", ExitCode.USAGE, "the payload is not JSON: line 1 column 1"),
        (["enqueue"], "", ExitCode.USAGE, "stdin: the payload is empty"),
        (["enqueue"], b"\xff\xfe{}", ExitCode.USAGE, "not UTF-8"),
        (["enqueue", "--file", "/nonexistent.json"], None, ExitCode.USAGE, "cannot read"),
        (["enqueue", "--key", ""], "{}", ExitCode.USAGE, "idempotency key"),
        (["enqueue", "--kind", "weird"], "{}", ExitCode.USAGE, "kind must be one of"),
        (["complete", "9", "--fence", "1"], "{}", ExitCode.NOT_FOUND, "no message 9"),
        (["renew", "9", "--fence", "1"], None, ExitCode.NOT_FOUND, "no message 9"),
        (["show", "9"], None, ExitCode.NOT_FOUND, "no message 9"),
        (["ack", "9"], None, ExitCode.NOT_FOUND, "no message 9"),
        (["requeue"], None, ExitCode.USAGE, "requeue needs message ids or --expired"),
        (["list", "--only", "odd"], None, ExitCode.USAGE, "state must be one of"),
        (["claim", "--worker", ""], None, ExitCode.USAGE, "worker id"),
    ],
)
def test_bad_input_is_one_line_error_with_exit_code_and_no_change(
    db: str, args: list[str], stdin: str | bytes | None, code: int, message: str
) -> None:
    before = Path(db).read_bytes()
    exit_code, out, err = run(args[0], "--db", db, *args[1:], stdin=stdin)
    assert exit_code == code
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert out == ""
    _, listed, _ = run("list", "--db", db, "--json")
    assert json.loads(listed) == []
    assert Path(db).read_bytes() == before


def test_missing_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    code, _, err = run("enqueue", "--db", str(path), stdin="{}")
    assert code == ExitCode.NOT_FOUND
    assert "no inbox here" in err and "control queue init" in err
    assert not path.exists()


def test_schema_from_the_future_is_refused(db: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    code, _, err = run("stats", "--db", db)
    assert code == ExitCode.UNAVAILABLE
    assert "schema version 99" in err


def test_wrong_fence_is_refused_and_recorded_stale(db: str) -> None:
    run("enqueue", "--db", db, stdin="{}")
    run("claim", "--db", db, "--worker", "w")
    code, _, err = run("renew", "--db", db, "1", "--fence", "5")
    assert code == ExitCode.CONFLICT and "fence 5 is not current" in err
    code, _, err = run("complete", "--db", db, "1", "--fence", "5", stdin='{"late": 1}')
    assert code == ExitCode.CONFLICT and "recorded as stale" in err
    _, out, _ = run("show", "--db", db, "1", "--json")
    shown = json.loads(out)
    assert shown["state"] == "claimed" and shown["response"] is None
    assert [s["fence"] for s in shown["stale_results"]] == [5]


def test_reused_key_with_other_content_is_a_conflict(db: str) -> None:
    run("enqueue", "--db", db, "--key", "k", stdin='{"a": 1}')
    code, _, err = run("enqueue", "--db", db, "--key", "k", stdin='{"a": 2}')
    assert code == ExitCode.CONFLICT and "different content" in err


def test_injection_corpus_round_trips_byte_for_byte_through_a_real_process(
    db: str, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    texts = [*corpus(canary), big_text()]
    env = {**os.environ, "SUPERAGENT_QUEUE_DB": db}
    control = [sys.executable, "-m", "control"]
    for number, text in enumerate(texts):
        payload = {"task": text, "key_" + text[:20]: [text]}
        sent = subprocess.run(
            [*control, "queue", "enqueue", "--key", f"k{number}", "--json"],
            input=json.dumps(payload).encode(),
            capture_output=True,
            env=env,
            check=True,
        )
        message_id = json.loads(sent.stdout)["id"]
        shown = subprocess.run(
            [*control, "queue", "show", str(message_id), "--json"],
            capture_output=True,
            env=env,
            check=True,
        )
        assert json.loads(shown.stdout)["payload"] == payload
        assert json.loads(shown.stdout)["payload"]["task"].encode() == text.encode()
    assert not canary.exists()


def test_root_works_on_a_users_inbox_as_that_user() -> None:
    """The orchestrator often reaches a worker as root: the files SQLite creates while
    root holds the inbox open (-wal, -shm) must still belong to the worker's user.
    (SQLite gives them the database's owner when it runs as root; this guards that.)"""
    need(os.geteuid() == 0, "needs root to act for another user")
    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own tmp is closed to other users
    db = home / "queue.db"
    Queue(db).close()
    for path in [home, *home.iterdir()]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    server = subprocess.Popen(
        [sys.executable, "-m", "control", "queue", "rpc", "--db", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write(json.dumps({"op": "enqueue", "payload": {"a": 1}, "key": "k"}) + "\n")
    server.stdin.flush()
    assert json.loads(server.stdout.readline())["ok"] is True
    owners = {path.name: path.stat().st_uid for path in home.iterdir()}  # while it is open
    server.stdin.close()
    assert server.wait(30) == 0
    shutil.rmtree(home)
    assert {"queue.db", "queue.db-wal", "queue.db-shm"} <= set(owners)
    assert set(owners.values()) == {nobody.pw_uid}, owners


def rpc_process(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`control queue rpc` as the transports start it: its own fast path, not Typer."""
    return subprocess.run(
        [sys.executable, "-m", "control", "queue", "rpc", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_rpc_reads_its_options_both_ways(db: str) -> None:
    request = "eyJvcCI6ICJwaW5nIn0="  # base64 of {"op": "ping"}
    for args in (["--db", db, "--base64"], [f"--db={db}", "--base64"], ["--base64", "--db", db]):
        done = rpc_process(*args, stdin=request)
        assert (done.returncode, json.loads(done.stdout)) == (0, {"ok": True}), args


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--db"], "--db needs a path"),
        (["--db="], "--db needs a path"),
        (["--base64", "extra"], "unknown argument 'extra'"),
    ],
)
def test_rpc_bad_arguments_are_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = rpc_process(*args, stdin="eyJvcCI6ICJwaW5nIn0=")
    assert done.returncode == ExitCode.USAGE
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert says in done.stderr
