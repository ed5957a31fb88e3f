"""Wait for the inbox to change without busy polling: inotify on its directory.

A remote enqueue writes `queue.db-wal` (or `queue.db`), which wakes the worker at
once; a self-pipe lets a signal handler wake it too. Where inotify is missing the
wait simply times out, and the worker's slow poll takes over.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then `len` bytes of name)

Woke = Literal["changed", "woken", "timeout"]
# How a woken worker looks for the commit that woke it: every 0.1 ms for the first
# 10 ms (a writer's sync), then less and less often up to 0.1 s in all.
_COMMIT_SPIN_S, _COMMIT_SPIN_FOR_S, _COMMIT_WAIT_S = 0.0001, 0.01, 0.1


def await_commit(data_version: Callable[[], int], seen: int) -> None:
    """Return once `data_version()` (the inbox's PRAGMA data_version) is not `seen`, or
    after 0.1 s.

    inotify fires on a writer's first WAL write, a moment before its commit is
    visible to readers: the writer still syncs the WAL, then updates the WAL index
    through shared memory, which inotify does not see. So look (a few microseconds)
    every 0.1 ms while a sync lasts, then back off: a claim made too early would leave
    the task to the slow poll. The worker's own writes (its heartbeat) wake it too and
    never change data_version; the back-off keeps what those cost to a few hundred
    looks. Sleeps doubling from the start cost up to twice the sync (bench-worker).
    """
    started = time.monotonic()
    pause = _COMMIT_SPIN_S
    while data_version() == seen:
        waited = time.monotonic() - started
        if waited >= _COMMIT_WAIT_S:
            return
        if waited >= _COMMIT_SPIN_FOR_S:
            pause = min(pause * 2, _COMMIT_WAIT_S - waited)
        time.sleep(pause)


class InboxWatcher:
    """Blocks in `wait` until the inbox file changes, `wake()` is called, or a timeout."""

    def __init__(self, db_path: Path, *, use_inotify: bool = True) -> None:
        self._names = {db_path.name.encode(), f"{db_path.name}-wal".encode()}
        self._read_pipe, self._write_pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fd: int | None = None
        if not use_inotify:
            return
        libc_name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0:
                mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
                path = os.fsencode(db_path.resolve().parent)
                if libc.inotify_add_watch(fd, path, mask) >= 0:
                    self.fd = fd
                else:
                    os.close(fd)
        except (OSError, AttributeError):
            self.fd = None

    @property
    def uses_inotify(self) -> bool:
        return self.fd is not None

    def wake(self) -> None:
        """Safe to call from a signal handler or another thread."""
        with contextlib.suppress(BlockingIOError):  # a full pipe: a wake-up is pending
            os.write(self._write_pipe, b"!")

    def wait(self, timeout_s: float) -> Woke:
        readers = [self._read_pipe] + ([self.fd] if self.fd is not None else [])
        try:
            ready, _, _ = select.select(readers, [], [], max(0.0, timeout_s))
        except InterruptedError:
            return "woken"
        woke: Woke = "timeout"
        if self._read_pipe in ready:
            self._drain(self._read_pipe)
            woke = "woken"
        if self.fd is not None and self.fd in ready and self._inbox_changed():
            woke = "changed"
        return woke

    def _inbox_changed(self) -> bool:
        assert self.fd is not None
        changed = False
        data = self._drain(self.fd)
        offset = 0
        while offset + _EVENT.size <= len(data):
            _, _, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            changed = changed or name in self._names
            offset += _EVENT.size + length
        return changed

    @staticmethod
    def _drain(fd: int) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        for fd in (self.fd, self._read_pipe, self._write_pipe):
            if fd is not None:
                os.close(fd)
        self.fd = None
