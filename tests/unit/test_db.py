"""The SQLite layer: network filesystems refused, schema versions, bad files."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from control import db
from control.errors import NotFoundError, UnavailableError, UsageError
from control.queue import SCHEMA_VERSION, Queue
from tests.support import need

# Lines in the format of /proc/self/mountinfo (proc(5)), as the kernel writes them.
MOUNTINFO = """\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
23 22 0:40 / /srv/nfs rw,relatime - nfs4 server:/export rw,vers=4.2
24 22 0:41 / /mnt/share rw,relatime - cifs //nas/share rw
25 22 0:42 / /mnt/c rw,noatime - 9p drvfs rw,dirsync,aname=drvfs
26 22 0:43 / /home/me/remote rw,nosuid - fuse.sshfs me@host:/ rw
27 23 0:44 / /srv/nfs/local rw - tmpfs tmpfs rw
28 22 0:45 / /mnt/with\\040space rw - nfs host:/x rw
"""


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/var/lib/superagent/queue.db", "ext4"),
        ("/srv/nfs/queue.db", "nfs4"),
        ("/srv/nfs/local/queue.db", "tmpfs"),  # a local mount inside the NFS one wins
        ("/srv/nfsother/queue.db", "ext4"),  # a prefix of the name is not a parent
        ("/mnt/share/q.db", "cifs"),
        ("/mnt/c/Users/me/q.db", "9p"),
        ("/home/me/remote/q.db", "fuse.sshfs"),
        ("/mnt/with space/q.db", "nfs"),
    ],
)
def test_filesystem_type_picks_the_innermost_mount(path: str, fstype: str) -> None:
    assert db.filesystem_type(Path(path), MOUNTINFO) == fstype


@pytest.mark.parametrize("path", ["/srv/nfs/q.db", "/mnt/share/q.db", "/mnt/c/q.db"])
def test_network_filesystems_are_refused(path: str) -> None:
    with pytest.raises(UnavailableError, match="refusing a SQLite database"):
        db.refuse_network_filesystem(Path(path), MOUNTINFO)


def test_local_filesystem_is_accepted(tmp_path: Path) -> None:
    db.refuse_network_filesystem(tmp_path / "q.db")


@pytest.fixture
def fuse_mount(tmp_path: Path) -> Iterator[Path]:
    """A real FUSE filesystem (bindfs) mounted for the test."""
    need(shutil.which("bindfs") is not None, "bindfs is not installed (make system-deps)")
    source, mount = tmp_path / "src", tmp_path / "mnt"
    source.mkdir()
    mount.mkdir()
    result = subprocess.run(["bindfs", str(source), str(mount)], capture_output=True, text=True)
    need(result.returncode == 0, f"cannot mount FUSE here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["fusermount", "-u", str(mount)], check=False)
        subprocess.run(["umount", str(mount)], check=False, capture_output=True)


def test_inbox_on_a_real_fuse_mount_is_refused_and_nothing_is_created(fuse_mount: Path) -> None:
    target = fuse_mount / "queue.db"
    with pytest.raises(UnavailableError, match=r"queue\.db: refusing .* fuse filesystem"):
        Queue(target)
    assert list(fuse_mount.iterdir()) == []


def test_database_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    Queue(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(UnavailableError, match="newer than this superagent knows"):
        Queue(path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_text("not a database, just some text that is long enough\n" * 20)
    before = path.read_bytes()
    with pytest.raises(UsageError, match="not a SQLite inbox"):
        Queue(path)
    assert path.read_bytes() == before


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        Queue(tmp_path)


def test_missing_parent_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="directory does not exist"):
        Queue(tmp_path / "nope" / "queue.db")


def test_migrations_apply_in_order_once_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    migrations = [
        "CREATE TABLE a (x INTEGER);",
        "ALTER TABLE a ADD COLUMN y TEXT;\nCREATE INDEX a_y ON a (y);",
    ]
    conn = db.connect(path, create=True)
    assert db.migrate(conn, migrations[:1], "x") == 1
    assert db.migrate(conn, migrations, "x") == 2
    assert db.migrate(conn, migrations, "x") == 2
    columns = [row[1] for row in conn.execute("PRAGMA table_info(a)")]
    assert columns == ["x", "y"]


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = db.connect(path, create=True)
    db.migrate(conn, ["CREATE TABLE a (x);"], "x")
    with pytest.raises(sqlite3.OperationalError):
        db.migrate(conn, ["CREATE TABLE a (x);", "CREATE TABLE b (x); CREATE TABLE a (y);"], "x")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'b'").fetchone() is None


def test_write_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "x.db", create=True)
    conn.execute("CREATE TABLE t (v)")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.write_transaction(conn) as tx:
        tx.execute("INSERT INTO t VALUES (1)")
        raise Boom
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    assert not conn.in_transaction


def test_busy_writer_is_waited_for_not_reported(tmp_path: Path) -> None:
    """A second connection blocked by an open write gets in once it ends: no SQLITE_BUSY."""
    path = tmp_path / "x.db"
    first = db.connect(path, create=True)
    first.execute("CREATE TABLE t (v)")
    second = db.connect(path, create=False, busy_timeout_s=5)
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO t VALUES (1)")
    done = threading.Event()

    def write_second() -> None:
        with db.write_transaction(second) as tx:
            tx.execute("INSERT INTO t VALUES (2)")
        done.set()

    thread = threading.Thread(target=write_second)
    thread.start()
    assert not done.wait(0.3)  # still waiting on the lock
    first.execute("COMMIT")
    thread.join(5)
    assert done.is_set()
    assert sorted(r[0] for r in first.execute("SELECT v FROM t")) == [1, 2]


def test_busy_beyond_the_timeout_is_a_project_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    first = db.connect(path, create=True)
    first.execute("CREATE TABLE t (v)")
    second = db.connect(path, create=False, busy_timeout_s=0.2)
    first.execute("BEGIN IMMEDIATE")
    try:
        with (
            pytest.raises(UnavailableError, match="busy"),
            db.write_transaction(second, busy_timeout_s=0.2),
        ):
            pass
    finally:
        first.execute("ROLLBACK")


def test_an_inbox_we_may_not_reach_is_a_clear_error(tmp_path: Path) -> None:
    need(os.geteuid() != 0 or shutil.which("setpriv") is not None, "needs setpriv as root")
    locked = tmp_path / "locked"
    locked.mkdir()
    Queue(locked / "queue.db").close()
    locked.chmod(0)
    script = (
        "from control.queue import Queue\n"
        "from control.errors import UnavailableError\n"
        "try:\n"
        f"    Queue({str(locked / 'queue.db')!r}, create=False)\n"
        "except UnavailableError as exc:\n"
        "    print(exc)\n"
    )
    argv = [sys.executable, "-c", script]
    if os.geteuid() == 0:  # root reads anything: ask as nobody
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    locked.chmod(0o700)
    assert "permission denied" in done.stdout, done.stderr


# -- access: say what it is, not "unable to open database file" ----------------------------

CONTROL = [sys.executable, "-m", "control"]
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory user nobody can reach (pytest's own tmp dirs are private to root)."""
    import tempfile  # noqa: PLC0415

    path = Path(tempfile.mkdtemp(prefix="sa-access-"))
    path.chmod(0o755)
    yield path
    path.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as another user")
    return subprocess.run(
        [*NOBODY, *CONTROL, *args], capture_output=True, text=True, check=False, cwd="/"
    )


def test_an_inbox_the_user_cannot_write_says_permission_denied(shared_dir: Path) -> None:
    Queue(shared_dir / "q.db").close()
    (shared_dir / "q.db").chmod(0o644)
    done = _as_nobody("queue", "stats", "--db", str(shared_dir / "q.db"))
    assert done.returncode == 5
    assert "permission denied: uid 65534 cannot write the inbox (owner uid 0, mode 0644)" in (
        done.stderr
    )
    assert "not a SQLite" not in done.stderr and "unable to open" not in done.stderr


def test_a_directory_the_user_cannot_write_says_so(shared_dir: Path) -> None:
    inbox = shared_dir / "d"
    inbox.mkdir(mode=0o555)
    inbox.chmod(0o555)
    done = _as_nobody("queue", "init", "--db", str(inbox / "q.db"))
    assert done.returncode == 5
    assert f"{inbox}: permission denied: uid 65534 cannot create files" in done.stderr
    assert "-wal and -shm" in done.stderr


def test_an_inbox_on_a_read_only_filesystem_says_so(shared_dir: Path) -> None:
    mount = shared_dir / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        Queue(mount / "q.db").close()
        for leftover in mount.glob("q.db-*"):
            leftover.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        done = subprocess.run(
            [*CONTROL, "queue", "stats", "--db", str(mount / "q.db")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 5, done.stderr
        assert f"{mount / 'q.db'}: the inbox is on a read-only filesystem" in done.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_read_only_connection_opens_the_file_the_file_system_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`link/../s.db` is the `s.db` beside the link's target, not the one here: the path
    is made absolute without folding `..` as text."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    for where, table in ((tmp_path / "a" / "s.db", "real"), (tmp_path / "s.db", "decoy")):
        conn = db.connect(where, create=True)
        conn.execute(f"CREATE TABLE {table} (x)")
        conn.close()
    monkeypatch.chdir(tmp_path)
    conn = db.connect_read_only("link/../s.db")
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert names == ["real"]


@pytest.mark.parametrize("path", ["nul\x00.db", "missing/q.db", "/dev/null/q.db"])
def test_a_path_that_names_nothing_is_not_found(tmp_path: Path, path: str) -> None:
    with pytest.raises(NotFoundError):
        db.connect(str(tmp_path / path), create=False)


@pytest.mark.parametrize("create", [True, False])
def test_an_empty_path_is_refused(create: bool) -> None:
    with pytest.raises(UsageError, match="empty path"):
        db.connect("", create=create)
