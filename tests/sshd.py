"""A real OpenSSH server on 127.0.0.1 for the ssh transport's tests and the dispatch bench.

Started as root from a config in a temp directory: its own host key, its own
authorized_keys, no PAM, a port of its own. Restartable on the same port and key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from control.inventory import Worker
from tests.support import descendants

SSHD = Path("/usr/sbin/sshd")
VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def sshd_problem() -> str | None:
    """Why a local sshd cannot be started here, or None."""
    if not SSHD.exists():
        return "needs openssh-server (/usr/sbin/sshd); tests/setup-system.sh installs it"
    if os.geteuid() != 0:
        return "needs root to start sshd"
    if not shutil.which("ssh-keygen"):
        return "needs ssh-keygen (openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    """A new ed25519 key pair at `path`; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "superagent-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """One sshd: `start`, `stop` (the listener and every session), `restart`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = root / "host_ed25519"
        host_pub = keygen(self.host_key)
        self.client_key = root / "client_ed25519"
        (root / "authorized_keys").write_text(keygen(self.client_key) + "\n")
        self.known_hosts = root / "known_hosts"
        kind, blob = host_pub.split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        self.log = root / "sshd.log"
        self.config = root / "sshd_config"
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {root / 'authorized_keys'}",
                    f"PidFile {root / 'sshd.pid'}",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "MaxStartups 200",
                    "MaxSessions 50",
                    "LogLevel INFO",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill the listener and every process under it (the sessions and their commands)."""
        if self.process is None:
            return
        pids = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def accepted(self) -> int:
        """Connections the server authenticated so far (its own log says)."""
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def worker(self, name: str, db: Path, **extra: Any) -> Worker:
        values: dict[str, Any] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.client_key),
            "superagent_known_hosts": str(self.known_hosts),
            "superagent_control": str(VENV_BIN / "control"),
            "superagent_queue_db": str(db),
        }
        values.update(extra)
        return Worker(name, transport="ssh", vars=values)
