"""The ssh transport: one persistent paramiko connection per worker, on which
`control queue rpc` keeps running and answers one JSON line per request line.

Host keys come from known_hosts and are never added: an unknown or changed key
is refused. Requests only ever travel on the channel's stdin.
"""

from __future__ import annotations

import getpass
import itertools
import json
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from control.errors import SuperagentError, UsageError
from control.inventory import Worker
from control.transport.base import (
    InboxCalls,
    PollResult,
    TransportError,
    poll_result,
    rpc_argv,
    unwrap,
)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_CALL_TIMEOUT_S = 30.0
DEFAULT_BACKOFF_S = (0.5, 30.0)  # first wait after a failure, and the most it grows to
KEEPALIVE_S = 15
MAX_POLL_THREADS = 32
_STDERR_KEEP = 4096
_SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


class HostKeyError(TransportError):
    """The worker's host key is unknown or differs from known_hosts: nothing was sent."""


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach one worker, from its inventory variables."""

    worker: str
    host: str
    port: int
    user: str
    key_file: str | None
    known_hosts: tuple[str, ...]
    command: str

    @classmethod
    def of(cls, worker: Worker) -> SshTarget:
        v = worker.vars
        port = v.get("ansible_port") or v.get("ansible_ssh_port") or 22
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise UsageError(
                f"{worker.name}: ansible_port must be a number, not {port!r}"
            ) from None
        key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
        return cls(
            worker=worker.name,
            host=str(v.get("ansible_host") or worker.name),
            port=port,
            user=str(v.get("ansible_user") or v.get("ansible_ssh_user") or getpass.getuser()),
            key_file=str(Path(str(key)).expanduser()) if key else None,
            known_hosts=known_hosts_files(worker),
            # Only validated absolute paths, quoted: the remote shell sees nothing else.
            command=" ".join(shlex.quote(part) for part in rpc_argv(worker)),
        )

    @property
    def address(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def known_hosts_files(worker: Worker) -> tuple[str, ...]:
    """The known_hosts files the inventory names for this worker, besides the user's own.

    `superagent_known_hosts` (a path or a list), else `UserKnownHostsFile` in
    `ansible_ssh_common_args` / `ansible_ssh_extra_args`.
    """
    named = worker.vars.get("superagent_known_hosts")
    if named:
        paths = [named] if isinstance(named, str) else list(named)
        return tuple(str(Path(str(p)).expanduser()) for p in paths)
    found: list[str] = []
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        try:
            words = shlex.split(str(worker.vars.get(var) or ""))
        except ValueError:
            continue
        options = [w[2:] for w in words if w.startswith("-o") and len(w) > 2]
        options += [b for a, b in itertools.pairwise(words) if a == "-o"]
        for option in options:
            name, _, value = option.replace("=", " ", 1).partition(" ")
            if name.strip().lower() == "userknownhostsfile":
                found += [str(Path(p).expanduser()) for p in value.split()]
    return tuple(found)


class _Broken(Exception):
    """The channel failed; `retry` says whether a fresh connection may be tried at once."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class SshConnection:
    """The one paramiko wrapper: a client, its exec channel running the rpc command.

    A context manager; `call` sends one request line and returns the answer line.
    """

    def __init__(
        self,
        target: SshTarget,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        client_factory: Callable[[], paramiko.SSHClient] = paramiko.SSHClient,
    ) -> None:
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self._client_factory = client_factory
        self._client: paramiko.SSHClient | None = None
        self._channel: paramiko.Channel | None = None
        self._buffer = b""
        self._stderr = b""

    def __enter__(self) -> SshConnection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect (host key checked against known_hosts) and start the rpc command."""
        t = self.target
        client = self._client_factory()
        try:
            client.load_system_host_keys()
            if _SYSTEM_KNOWN_HOSTS.is_file():
                client.load_system_host_keys(str(_SYSTEM_KNOWN_HOSTS))
            for path in t.known_hosts:
                try:
                    client.load_system_host_keys(path)
                except OSError as exc:
                    raise TransportError(
                        f"{t.worker}: cannot read known_hosts file {path}: {exc}"
                    ) from exc
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    t.host,
                    port=t.port,
                    username=t.user,
                    key_filename=t.key_file,
                    look_for_keys=t.key_file is None,
                    timeout=self.connect_timeout_s,
                    banner_timeout=self.connect_timeout_s,
                    auth_timeout=self.connect_timeout_s,
                    channel_timeout=self.connect_timeout_s,
                )
            except paramiko.BadHostKeyException as exc:
                raise HostKeyError(
                    f"{t.worker}: the host key of {t.address} does not match known_hosts "
                    f"({', '.join(self._known_hosts_names())}): it offered {exc.key.fingerprint}; "
                    "refusing to connect"
                ) from exc
            except paramiko.SSHException as exc:
                if "not found in known_hosts" in str(exc):
                    raise HostKeyError(
                        f"{t.worker}: {t.address} is not in known_hosts "
                        f"({', '.join(self._known_hosts_names())}); refusing to connect. "
                        "Add its key after checking the fingerprint; it is never added "
                        "automatically"
                    ) from exc
                raise TransportError(f"{t.worker}: ssh to {t.address}: {exc}") from exc
            except (OSError, EOFError) as exc:
                raise TransportError(
                    f"{t.worker}: cannot connect to {t.address}: {exc or type(exc).__name__}"
                ) from exc
            transport = client.get_transport()
            if transport is None:  # pragma: no cover - connect() succeeded
                raise TransportError(f"{t.worker}: ssh to {t.address}: no transport")
            transport.set_keepalive(KEEPALIVE_S)
            try:
                channel = transport.open_session(timeout=self.connect_timeout_s)
                channel.exec_command(t.command)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise TransportError(
                    f"{t.worker}: cannot start `{t.command}` on {t.address}: {exc}"
                ) from exc
        except BaseException:
            client.close()
            raise
        self._client, self._channel = client, channel
        self._buffer = self._stderr = b""

    def _known_hosts_names(self) -> list[str]:
        return ["~/.ssh/known_hosts", *self.target.known_hosts]

    @property
    def alive(self) -> bool:
        channel, client = self._channel, self._client
        if channel is None or client is None or channel.closed or channel.exit_status_ready():
            return False
        transport = client.get_transport()
        return transport is not None and transport.is_active()

    def call(self, line: bytes, timeout_s: float) -> bytes:
        """Send one request line; the answer line. Raises _Broken when the channel fails."""
        channel = self._channel
        if channel is None or not self.alive:
            raise _Broken("the connection is closed", retry=True)
        try:
            channel.settimeout(timeout_s)
            channel.sendall(line)
        except TimeoutError as exc:
            raise _Broken(f"the worker took no input for {timeout_s:g}s", retry=False) from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _Broken(f"sending failed: {exc or type(exc).__name__}", retry=True) from exc
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            self._drain_stderr()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Broken(f"no answer within {timeout_s:g}s", retry=False)
            try:
                channel.settimeout(remaining)
                chunk = channel.recv(1 << 16)
            except TimeoutError as exc:
                raise _Broken(f"no answer within {timeout_s:g}s", retry=False) from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise _Broken(f"reading failed: {exc or type(exc).__name__}", retry=True) from exc
            if not chunk:
                raise _Broken(self._ended(), retry=True)
            self._buffer += chunk
        answer, _, self._buffer = self._buffer.partition(b"\n")
        return answer

    def _drain_stderr(self) -> None:
        channel = self._channel
        while channel is not None and channel.recv_stderr_ready():
            self._stderr = (self._stderr + channel.recv_stderr(4096))[-_STDERR_KEEP:]

    def _ended(self) -> str:
        """Why the remote command stopped answering: its exit status and last stderr line."""
        channel = self._channel
        status = None
        if channel is not None:
            channel.status_event.wait(1.0)
            self._drain_stderr()
            if channel.exit_status_ready():
                status = channel.recv_exit_status()
        lines = self._stderr.decode(errors="replace").strip().splitlines()
        why = f": {lines[-1][:500]}" if lines else ""
        ended = "the remote rpc command ended" + (f" (exit {status})" if status else "")
        return ended + why

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._client is not None:
            self._client.close()
        self._channel = self._client = None


class _Link:
    """One worker's connection, its lock, and the backoff after failures."""

    def __init__(self, transport: SshTransport, target: SshTarget) -> None:
        self.owner = transport
        self.target = target
        self.lock = threading.Lock()
        self.connection: SshConnection | None = None
        self.failures = 0
        self.next_attempt = 0.0
        self.last_error = ""
        self.last_error_type: type[TransportError] = TransportError
        self.connects = 0

    def call(self, request: dict[str, Any]) -> Any:
        owner = self.owner
        name = self.target.worker
        if not self.lock.acquire(timeout=owner.connect_timeout_s + owner.call_timeout_s):
            raise TransportError(f"{name}: busy: an earlier request has not finished")
        try:
            # ASCII JSON: the remote end decodes stdin with its locale, whatever that is.
            line = json.dumps(request).encode("ascii") + b"\n"
            for attempt in (1, 2):
                fresh = self._connected()
                assert self.connection is not None
                try:
                    answer = self.connection.call(line, owner.call_timeout_s)
                except _Broken as exc:
                    self._drop()
                    # A connection that had served is stale (a restarted server, a dropped
                    # link): one new one at once. Requests are idempotent, so a repeat is safe.
                    if exc.retry and not fresh and attempt == 1:
                        continue
                    self._failed(str(exc))
                    raise TransportError(f"{name}: {exc}") from None
                self.failures = 0
                try:
                    return json.loads(answer)
                except ValueError:
                    self._drop()
                    raise TransportError(
                        f"{name}: not a protocol answer: {answer[:200]!r}"
                    ) from None
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self.lock.release()

    def _connected(self) -> bool:
        """Make sure a connection is up; True when it was opened just now."""
        if self.connection is not None and self.connection.alive:
            return False
        self._drop()
        wait = self.next_attempt - self.owner.clock()
        if wait > 0:
            raise self.last_error_type(
                f"{self.target.worker}: unreachable ({self.last_error}); "
                f"next attempt in {wait:.1f}s"
            )
        connection = SshConnection(
            self.target,
            connect_timeout_s=self.owner.connect_timeout_s,
            client_factory=self.owner.client_factory,
        )
        try:
            connection.open()
        except TransportError as exc:
            self._failed(str(exc).removeprefix(f"{self.target.worker}: "), type(exc))
            raise
        self.connects += 1
        self.connection = connection
        return True

    def _failed(self, error: str, kind: type[TransportError] = TransportError) -> None:
        first, most = self.owner.backoff_s
        self.failures += 1
        self.last_error, self.last_error_type = error, kind
        self.next_attempt = self.owner.clock() + min(most, first * 2 ** (self.failures - 1))

    def _drop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def close(self) -> None:
        with self.lock:
            self._drop()


class SshTransport(InboxCalls):
    """The fast path: a persistent channel per worker, a poll fanned out on threads."""

    name = "ssh"

    def __init__(
        self,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        backoff_s: tuple[float, float] = DEFAULT_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[[], paramiko.SSHClient] = paramiko.SSHClient,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        self.backoff_s = backoff_s
        self.clock = clock
        self.client_factory = client_factory
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _link(self, worker: Worker) -> _Link:
        target = SshTarget.of(worker)
        with self._lock:
            link = self._links.get(worker.name)
            if link is None or link.target != target:  # the inventory changed under us
                if link is not None:
                    link.close()
                link = self._links[worker.name] = _Link(self, target)
            return link

    def connects(self, worker: Worker | str) -> int:
        """How many connections were opened to the worker so far."""
        link = self._links.get(worker if isinstance(worker, str) else worker.name)
        return link.connects if link else 0

    def call(self, worker: Worker, request: dict[str, Any]) -> dict[str, Any]:
        return unwrap(worker.name, self._link(worker).call(request))

    def poll_request(
        self, workers: Sequence[Worker], request: dict[str, Any]
    ) -> dict[str, PollResult]:
        """Every worker at once, each on its own connection; a failure is `reachable=False`."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_POLL_THREADS, thread_name_prefix="ssh-poll")
            pool = self._pool

        def one(worker: Worker) -> PollResult:
            try:
                return poll_result(worker.name, self.call(worker, request))
            except SuperagentError as exc:
                return PollResult(worker.name, False, error=str(exc))

        return {w.name: result for w, result in zip(workers, pool.map(one, workers), strict=True)}

    def close(self) -> None:
        with self._lock:
            links, self._links = list(self._links.values()), {}
            pool, self._pool = self._pool, None
        for link in links:
            link.close()
        if pool is not None:
            pool.shutdown(wait=True)
