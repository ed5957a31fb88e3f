"""The one process supervisor: runs an agent or a verify command under a wall-clock and
a silence watchdog, logging all it says.

The child gets its own session (so its whole process group can be signalled), its
input on stdin, and every byte it prints is appended to the log file, with secret
values masked. A wall-clock timeout, a no-output timeout or a cancel request ends
the whole group: SIGTERM, a grace period, then SIGKILL; what the child leaves in its
group when it exits is killed too. Nothing here decides whether the child succeeded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from control.errors import UsageError

CancelCheck = Callable[[], bool]
# Turns the argv and environment to run into those that run it confined (see
# control.worker.sandbox).
Wrap = Callable[[Sequence[str], Mapping[str, str]], tuple[list[str], dict[str, str]]]
LineHandler = Callable[[str], None]
Stream = Literal["stdout", "stderr"]

POLL_INTERVAL_S = 0.1
DEFAULT_KILL_GRACE_S = 5.0
DEFAULT_LINGER_S = 15.0
TAIL_BYTES = 64 * 1024
# A line longer than this is logged and handed on in pieces: one runaway line must not
# hold the whole output in memory.
MAX_LINE_BYTES = 8 * 1024 * 1024
_DRAIN_AFTER_EXIT_S = 2.0
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class ProcessOutcome:
    """How a watched process ended, and the last of what it printed."""

    exit_code: int | None  # None when it could not be started; negative: killed by that signal
    timed_out: bool  # the wall-clock timeout ended it
    silent: bool  # the no-output watchdog ended it
    cancelled: bool  # a cancel request ended it
    killed: bool  # it had to be sent SIGKILL (it ignored SIGTERM for the grace period)
    duration_s: float
    stdout_tail: str
    stderr_tail: str
    output_bytes: int
    start_error: str | None = None  # why it could not be started (not found, not executable)
    lingered: bool = False  # it said it was done but did not exit, so it was ended

    @property
    def ended_by_watchdog(self) -> bool:
        return self.timed_out or self.silent or self.cancelled


def as_cancel_check(cancel: CancelCheck | threading.Event | None) -> CancelCheck:
    """One shape for the ways a caller asks to stop: an Event, a callable, or nothing."""
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


class Redactor:
    """Masks secret values in text before it reaches a log file or a reason string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole. Very short
        # values would mask innocent text and are not secrets worth the name.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class _Tail:
    """The last `limit` bytes written to it."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.pop(0))

    def text(self) -> str:
        return b"".join(self._chunks)[-self._limit :].decode("utf-8", "replace")


class _Log:
    """The run's log file, shared by the two reader threads (one line at a time)."""

    def __init__(self, handle: IO[str], redact: Redactor) -> None:
        self._handle = handle
        self._redact = redact
        self._lock = threading.Lock()

    def write(self, stream: Stream, line: str) -> None:
        text = self._redact(line)
        if stream == "stderr":
            text = "[stderr] " + text
        if not text.endswith("\n"):
            text += "\n"
        with self._lock:
            self._handle.write(text)
            self._handle.flush()

    def note(self, text: str) -> None:
        with self._lock:
            self._handle.write(f"# {self._redact(text)}\n")
            self._handle.flush()


class _Reader(threading.Thread):
    """Reads one pipe to its end: records activity, the tail, and each line."""

    def __init__(
        self,
        pipe: IO[bytes],
        stream: Stream,
        log: _Log,
        on_line: LineHandler | None,
        activity: Callable[[int], None],
    ) -> None:
        super().__init__(name=f"agent-{stream}", daemon=True)
        self._pipe = pipe
        self._stream = stream
        self._log = log
        self._on_line = on_line
        self._activity = activity
        self.tail = _Tail()
        self.error: BaseException | None = None

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        self._log.write(self._stream, line)
        if self._on_line is not None:
            try:
                self._on_line(line.rstrip("\r\n"))
            except Exception as exc:  # a parser bug must not stop the pipe being drained
                if self.error is None:
                    self.error = exc

    def run(self) -> None:
        pending = bytearray()
        fd = self._pipe.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                self._activity(len(data))
                self.tail.add(data)
                search_from = len(pending)
                pending += data
                while (cut := pending.find(b"\n", search_from)) >= 0:
                    self._emit(bytes(pending[: cut + 1]))
                    del pending[: cut + 1]
                    search_from = 0
                if len(pending) > MAX_LINE_BYTES:
                    self._emit(bytes(pending))
                    pending.clear()
            if pending:
                self._emit(bytes(pending))
        except BaseException as exc:  # reported by the runner, never lost in a thread
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()


def exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it: its zombie keeps the process
    group id from being reused until the group has been cleaned up."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None and info.si_pid == pid


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Write the prompt and close stdin; a child that stops reading is not our error."""
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def run_watched(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path | None,
    stdin_data: bytes | None = None,
    wall_timeout_s: float,
    silence_timeout_s: float | None = None,
    cancel: CancelCheck | threading.Event | None = None,
    secrets: Iterable[str] = (),
    on_stdout_line: LineHandler | None = None,
    kill_grace_s: float = DEFAULT_KILL_GRACE_S,
    log_header: Sequence[str] = (),
    finished: Callable[[], bool] | None = None,
    linger_s: float = DEFAULT_LINGER_S,
    merge_stderr: bool = False,
    wrap: Wrap | None = None,
) -> ProcessOutcome:
    """Run `argv` in `cwd` until it exits, a watchdog fires or `cancel` says stop.

    `finished`, when given, tells whether the process has already said all it will say
    (an agent's final result); a process still running `linger_s` after that is ended
    (`lingered`), as agent CLIs are known to hang after their last word.

    The log file at `log_path` gets the header lines, then every line the process
    prints (stderr lines prefixed `[stderr]`), then how it ended. `secrets` are masked
    in the log and in the returned tails. `on_stdout_line` sees each stdout line as it
    arrives (without its newline), in the reader thread. With `merge_stderr`, stderr
    goes to the stdout pipe, interleaved as printed, and `stderr_tail` stays empty.
    `log_path` None: nothing is logged. `wrap`, when given, turns argv into the command
    that runs it in a sandbox; the watchdogs and the group kill then apply to that.
    """
    if not argv:
        raise UsageError("an agent command needs at least the program to run")
    if wall_timeout_s <= 0:
        raise UsageError(f"the wall-clock timeout must be positive, not {wall_timeout_s}")
    if silence_timeout_s is not None and silence_timeout_s <= 0:
        raise UsageError(f"the silence timeout must be positive, not {silence_timeout_s}")
    should_stop = as_cancel_check(cancel)
    redact = Redactor(secrets)
    if log_path is not None:
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    started = time.monotonic()
    target = os.devnull if log_path is None else log_path
    # A new log is 0600: it holds what the agent printed, which may be sensitive.
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8") as handle:
        log = _Log(handle, redact)
        for line in log_header:
            log.note(line)
        try:
            run_argv, run_env = wrap(argv, env) if wrap is not None else (list(argv), dict(env))
            proc = subprocess.Popen(
                run_argv,
                cwd=cwd,
                env=run_env,
                stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            reason = f"could not start {argv[0]!r}: {exc.strerror or exc}"
            log.note(reason)
            return ProcessOutcome(
                exit_code=None, timed_out=False, silent=False, cancelled=False, killed=False,
                duration_s=0.0, stdout_tail="", stderr_tail="", output_bytes=0,
                start_error=reason,
            )  # fmt: skip
        outcome = _watch(
            proc,
            log=log,
            redact=redact,
            stdin_data=stdin_data,
            started=started,
            wall_timeout_s=wall_timeout_s,
            silence_timeout_s=silence_timeout_s,
            should_stop=should_stop,
            on_stdout_line=on_stdout_line,
            kill_grace_s=kill_grace_s,
            finished=finished,
            linger_s=linger_s,
        )
        ending = (
            "cancelled" if outcome.cancelled
            else f"still running {linger_s:g}s after its final result" if outcome.lingered
            else f"wall-clock timeout after {wall_timeout_s:g}s" if outcome.timed_out
            else f"no output for {silence_timeout_s:g}s" if outcome.silent
            else "exited"
        )  # fmt: skip
        log.note(
            f"process {ending}; exit code {outcome.exit_code}; "
            f"{outcome.duration_s:.1f}s; {outcome.output_bytes} bytes of output"
            + ("; killed with SIGKILL" if outcome.killed else "")
        )
    return outcome


def _watch(
    proc: subprocess.Popen[bytes],
    *,
    log: _Log,
    redact: Redactor,
    stdin_data: bytes | None,
    started: float,
    wall_timeout_s: float,
    silence_timeout_s: float | None,
    should_stop: CancelCheck,
    on_stdout_line: LineHandler | None,
    kill_grace_s: float,
    finished: Callable[[], bool] | None,
    linger_s: float,
) -> ProcessOutcome:
    assert proc.stdout is not None
    lock = threading.Lock()
    last_output = [started]
    total = [0]

    def activity(size: int) -> None:
        with lock:
            last_output[0] = time.monotonic()
            total[0] += size

    readers = _start_readers(proc, log, on_stdout_line, activity)
    if stdin_data is not None and proc.stdin is not None:
        threading.Thread(target=_feed, args=(proc.stdin, stdin_data), daemon=True).start()

    timed_out = silent = cancelled = killed = lingered = False
    finished_at: float | None = None
    pgid = proc.pid  # start_new_session: the child leads its own group
    while not exited(proc.pid):
        now = time.monotonic()
        with lock:
            quiet_for = now - last_output[0]
        if finished_at is None and finished is not None and finished():
            finished_at = now
        if should_stop():
            cancelled = True
        elif now - started >= wall_timeout_s:
            timed_out = True
        elif finished_at is not None and now - finished_at >= linger_s:
            lingered = True
        elif silence_timeout_s is not None and quiet_for >= silence_timeout_s:
            silent = True
        if cancelled or timed_out or silent or lingered:
            killed = _terminate_group(proc.pid, pgid, kill_grace_s)
            break
        time.sleep(POLL_INTERVAL_S)
    # The leader is gone (or going); whatever it left in its group goes with it, while its
    # unreaped zombie still pins the group id.
    signal_group(pgid, signal.SIGKILL)
    exit_code = proc.wait()
    deadline = time.monotonic() + _DRAIN_AFTER_EXIT_S
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    for reader in readers:
        if reader.error is not None:
            log.note(f"reading the {reader.name} pipe failed: {reader.error!r}")
    return ProcessOutcome(
        exit_code=exit_code,
        timed_out=timed_out,
        silent=silent,
        cancelled=cancelled,
        killed=killed,
        duration_s=time.monotonic() - started,
        stdout_tail=redact(readers[0].tail.text()),
        stderr_tail=redact(readers[1].tail.text()) if len(readers) > 1 else "",
        output_bytes=total[0],
        lingered=lingered,
    )


def _start_readers(
    proc: subprocess.Popen[bytes],
    log: _Log,
    on_stdout_line: LineHandler | None,
    activity: Callable[[int], None],
) -> list[_Reader]:
    """A reader per pipe: stdout first, stderr when it is not merged into stdout."""
    assert proc.stdout is not None
    readers = [_Reader(proc.stdout, "stdout", log, on_stdout_line, activity)]
    if proc.stderr is not None:
        readers.append(_Reader(proc.stderr, "stderr", log, None, activity))
    for reader in readers:
        reader.start()
    return readers


def _terminate_group(pid: int, pgid: int, grace_s: float) -> bool:
    """SIGTERM the group, wait up to `grace_s` for the leader, then SIGKILL. True if killed."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if exited(pid):
            return False
        time.sleep(POLL_INTERVAL_S / 2)
    signal_group(pgid, signal.SIGKILL)
    return True
