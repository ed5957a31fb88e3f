"""Small system helpers the fleet is built from: run a command (its output's tail in the
error), processes alive or gone, locks, mounts, links and accounts."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.fleet.harness.config import STATE_DIR, TOOLS


class FleetError(RuntimeError):
    """Something the fleet could not do; the message says what and why."""


def log(message: str) -> None:
    print(f"fleet: {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: str | None = None,
    timeout: float | None = 600,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv],
        input=input,
        capture_output=capture,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )
    if check and done.returncode != 0:
        tail = ((done.stderr or "") + (done.stdout or "")).strip()[-2000:]
        raise FleetError(f"{' '.join(map(str, argv))} exited {done.returncode}: {tail}")
    return done


def missing_requirements() -> list[str]:
    """Why the fleet cannot run here (empty when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the test fleet needs root (namespaces, overlays, systemd-nspawn)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        problems.append(
            f"missing packages: {' '.join(missing)} (tests/setup-system.sh installs them)"
        )
    if not Path("/sys/fs/cgroup").is_dir():
        problems.append("no cgroup filesystem at /sys/fs/cgroup")
    return problems


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One fleet operation at a time (a test session and `make fleet-down`, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def session_lock(timeout: float = 3600) -> Iterator[None]:
    """The fleet is one per machine: a second test session (or bench) waits for the first."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "session.lock").open("w") as handle:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log("another test session is using the fleet; waiting for it")
                    waiting = True
                if time.monotonic() > deadline:
                    raise FleetError("the fleet stayed busy with another session") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def unmount(path: Path) -> None:
    if os.path.ismount(path) and run(["umount", path], check=False).returncode != 0:
        run(["umount", "--lazy", path], check=False)


def delete_link(name: str) -> None:
    if run(["ip", "link", "show", name], check=False).returncode == 0:
        run(["ip", "link", "del", name], check=False)


def user_exists(name: str) -> bool:
    return run(["getent", "passwd", name], check=False).returncode == 0


def group_exists(name: str) -> bool:
    return run(["getent", "group", name], check=False).returncode == 0
