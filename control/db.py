"""SQLite done one way for every database superagent keeps (worker inbox, run state).

Autocommit connections in WAL mode; every write goes through `write_transaction`,
which begins IMMEDIATE (so no read-then-write can deadlock into SQLITE_BUSY),
retries a busy COMMIT a bounded number of times, and rolls back on any error.
Schemas are versioned with `PRAGMA user_version` and migrated forward only.

Paths are handled with `os.path`, not `pathlib`: every ansible call starts a
`control queue rpc` on each host, which opens its inbox through here, and `pathlib`
(with the `urllib.parse` and `ipaddress` it imports) was the largest part of that
process's imports after `json` and `sqlite3`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from control.errors import NotFoundError, UnavailableError, UsageError

TYPE_CHECKING = False  # not typing's: `control queue rpc` never imports typing (see control.rpc)
if TYPE_CHECKING:
    from typing import Literal

    Synchronous = Literal["full", "normal"]

StrPath = str | os.PathLike[str]

# Filesystems on which SQLite's WAL (shared memory + POSIX locks) is unsafe or broken.
# 9p and drvfs are how WSL shows Windows drives (/mnt/c).
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "afs", "9p", "drvfs",
        "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "ncpfs", "coda", "davfs",
    }
)  # fmt: skip

DEFAULT_BUSY_TIMEOUT_S = 30.0
_COMMIT_RETRIES = 50
_COMMIT_RETRY_SLEEP_S = 0.02


def _unescape_mountinfo(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return (
        field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        .replace("\\134", "\\")
    )  # fmt: skip


def filesystem_type(path: StrPath, mountinfo: str | None = None) -> str:
    """The type of the filesystem that holds `path`, from /proc/self/mountinfo.

    The mount with the longest mount point that is a prefix of the resolved path
    wins, which is how the kernel resolves it too (later mounts shadow earlier).
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
                mountinfo = handle.read()
        except OSError:
            return "unknown"
    target = os.path.realpath(path)
    best_point, best_type = "", "unknown"
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        point = _unescape_mountinfo(fields[4])
        fstype = right.split()[0] if right.split() else "unknown"
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best_point):
            best_point, best_type = point, fstype
    return best_type


def is_network_filesystem(fstype: str) -> bool:
    """FUSE (`fuse`, `fuse.sshfs`, ...) counts: its locking is whatever the daemon does."""
    return fstype in NETWORK_FILESYSTEMS or fstype == "fuse" or fstype.startswith("fuse.")


def refuse_network_filesystem(path: StrPath, mountinfo: str | None = None) -> None:
    """Raise when `path` lies on a filesystem where WAL would silently corrupt or hang.

    A file that does not exist yet is judged by its directory.
    """
    path = os.fspath(path)
    fstype = filesystem_type(path if os.path.exists(path) else _parent(path), mountinfo)
    if is_network_filesystem(fstype):
        raise UnavailableError(
            f"{path}: refusing a SQLite database on a {fstype} filesystem "
            "(WAL needs local locks and shared memory); put it on a local disk"
        )


def connect(
    path: StrPath,
    *,
    create: bool,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    what: str = "database",
    create_hint: str = "create it first",
) -> sqlite3.Connection:
    """Open `path` in WAL mode, autocommit, with a busy timeout.

    `create=False` refuses a missing file instead of making an empty one, so a
    typo in `--db` is an error rather than a new, empty inbox.
    """
    path = os.fspath(path)
    if not path:  # SQLite would open a temporary database
        raise UsageError(f"an empty path names no {what} file")
    try:
        found = _stat(path)
        if found is not None and stat.S_ISDIR(found.st_mode):
            raise UsageError(f"{path}: is a directory, not a {what} file")
        if found is None:
            if not create:
                raise NotFoundError(f"{path}: no {what} here ({create_hint})")
            parent = _stat(_parent(path))
            if parent is None or not stat.S_ISDIR(parent.st_mode):
                raise NotFoundError(f"{_parent(path)}: directory does not exist")
    except PermissionError as exc:
        raise UnavailableError(f"{path}: permission denied ({exc.strerror})") from exc
    refuse_network_filesystem(path)
    if create:
        # Created 0600 before SQLite opens it: its -wal and -shm files take the same mode.
        # Where it cannot be made, SQLite fails below and access_problem says why.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.OperationalError as exc:
        if problem := access_problem(path, what):
            raise UnavailableError(problem) from exc
        raise UsageError(f"{path}: not a SQLite {what} ({exc})") from exc
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: not a SQLite {what} ({exc})") from exc
    if str(mode).lower() != "wal":
        conn.close()
        raise UnavailableError(f"{path}: could not switch the {what} to WAL (got {mode})")
    conn.row_factory = sqlite3.Row
    return conn


def connect_read_only(
    path: StrPath, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S, what: str = "database"
) -> sqlite3.Connection:
    """Open `path` so that nothing can be written through the connection (SQLite's
    `mode=ro`, and `query_only` besides): for readers that must never change it,
    such as the web dashboard. The file must exist."""
    import urllib.parse  # noqa: PLC0415  here: no inbox opened by the rpc is read-only

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NotFoundError(f"{path}: no {what} here")
    refuse_network_filesystem(path)
    # Joined, not abspath: that would fold `link/..` as text, not as the file system does.
    uri = "file:" + urllib.parse.quote(os.path.join(os.getcwd(), path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise UnavailableError(f"{path}: cannot read the {what} ({exc})") from exc
    conn.row_factory = sqlite3.Row
    return conn


def access_problem(path: StrPath, what: str = "database") -> str | None:
    """Why this process cannot open `path` for writing, in words to act on, or None.

    SQLite says only "unable to open database file" or "attempt to write a readonly
    database"; in WAL mode it must also create `-wal` and `-shm` files beside the
    database, so the directory must be writable too.
    """
    path = os.fspath(path)
    directory = _parent(path)
    if not os.path.isdir(directory):
        return f"{directory}: directory does not exist"
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return (
            f"{path}: the {what} is on a read-only filesystem; SQLite writes to it and "
            "beside it (-wal, -shm): put it on a writable one"
        )
    user = f"uid {os.geteuid()}"
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        info = os.stat(path)
        return (
            f"{path}: permission denied: {user} cannot write the {what} "
            f"(owner uid {info.st_uid}, mode {info.st_mode & 0o777:04o})"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        info = os.stat(directory)
        return (
            f"{directory}: permission denied: {user} cannot create files in the {what}'s "
            f"directory (owner uid {info.st_uid}, mode {info.st_mode & 0o777:04o}); SQLite "
            "needs to write -wal and -shm files beside it"
        )
    return None


def _stat(path: str) -> os.stat_result | None:
    """`path`'s status, None when nothing is there; PermissionError when this process may
    not look (what `pathlib`'s `exists` and `is_dir` treat as "not there", a NUL in the
    path included)."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return None
        raise
    except ValueError:
        return None


def _parent(path: str) -> str:
    """The directory holding `path`, "." for a bare file name (as `Path.parent` says)."""
    return os.path.dirname(path.rstrip("/")) or ("/" if path.startswith("/") else ".")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@contextmanager
def write_transaction(
    conn: sqlite3.Connection,
    synchronous: Synchronous = "full",
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, with busy retries and rollback on error.

    `synchronous` is set per transaction: FULL where losing the commit to a power
    cut would lose a task or a result, NORMAL (still safe against a process
    crash in WAL mode) where a lost commit only means the work is redone.
    """
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise UnavailableError(f"database stayed busy: {exc}") from exc
            time.sleep(_COMMIT_RETRY_SLEEP_S)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for attempt in range(_COMMIT_RETRIES):
        try:
            conn.execute("COMMIT")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or attempt == _COMMIT_RETRIES - 1:
                conn.execute("ROLLBACK")
                raise UnavailableError(f"COMMIT failed: {exc}") from exc
            time.sleep(_COMMIT_RETRY_SLEEP_S)


def migrate(conn: sqlite3.Connection, migrations: Sequence[str], what: str) -> int:
    """Bring the schema to `len(migrations)`; refuse a database from a newer superagent.

    Migration N (1-based) is `migrations[N-1]`; each runs in its own IMMEDIATE
    transaction together with the `user_version` bump, so a crash mid-way leaves
    the database at a whole version.
    """
    target = len(migrations)
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > target:
        raise UnavailableError(
            f"{what} has schema version {current}, newer than this superagent knows "
            f"({target}); upgrade superagent"
        )
    while current < target:
        with write_transaction(conn):
            # Re-read inside the lock: another process may have migrated meanwhile.
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current >= target:
                break
            for statement in _split_sql(migrations[current]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {current + 1}")
        current += 1
    return target


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements; `executescript` would COMMIT on its own.

    Cut at each `;` that ends a complete statement (so `;` inside strings or
    triggers stays where it is).
    """
    statements, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\n;"):
        statements.append(buffer.strip())
    return statements
