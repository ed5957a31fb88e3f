"""The sandbox a phase's agent and verify commands run in: bubblewrap (Debian's
`bubblewrap`), unprivileged user, mount, PID, IPC and UTS namespaces.

Inside, the process is uid 65534 with no capabilities and no way to make another user
namespace. It sees the system read-only (/usr, a short list from /etc, the agent's
install directories), its checkout and a scratch directory (HOME, the prompt file)
writable, the shared clone read-only with only its own worktree's git directory, a
private /tmp, /proc of its own PID namespace, and nothing else: no inbox, no logs, no
worker home or keys, no other slot. When the command ends, bubblewrap's PID 1 ends and
the kernel kills everything left in the namespace. Why bubblewrap and not a second
user or a systemd unit: see docs/worker.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from control.errors import UnavailableError
from control.process import Wrap
from control.worker.config import WorkerConfig

SANDBOX_UID = 65534  # "nobody" inside the namespace
# From /etc, only what a program needs to run, resolve names and trust TLS; never the
# whole directory (shadow, ssh host keys, private TLS keys, superagent's credentials).
_ETC = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "protocols",
    "resolv.conf",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
)
# The worker's own: its SSH agent, its git and D-Bus settings, systemd's credentials.
_ENV_DROP = frozenset(
    {"SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "CREDENTIALS_DIRECTORY",
     "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "SUPERAGENT_WORKER_CONFIG"}
)  # fmt: skip
_ENV_DROP_PREFIXES = ("GIT_", "SUPERAGENT_HOME")
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Jail:
    """What one sandboxed run may touch."""

    checkout: Path  # read-write: the phase's work
    scratch: Path  # read-write: HOME, prompt files, caches
    git_dir: Path | None = None  # the checkout's own worktree directory in the shared clone
    shared_clone: Path | None = None  # read-only, for the agent's `git status` and `git log`
    network: bool = True


def sandbox_for(config: WorkerConfig) -> Sandbox | None:
    """The sandbox this worker runs phases in; None on a host the inventory trusts.
    UnavailableError (with the reason) when the host cannot provide it."""
    if config.trusted_host:
        return None
    read_only = list(config.sandbox_read_only)
    for program in (config.node, config.claude, *config.agent_executables()):
        if os.sep in program:  # /opt/superagent/node/bin/node: the whole install, where
            # it really is and where PATH names it (a symlink to a versioned directory:
            # without it, `npm` in a verify command is not found)
            read_only.append(Path(os.path.realpath(program)).parent.parent)
            read_only.append(Path(program).parent.parent)
    return Sandbox.find(read_only, writable=config.sandbox_writable)


class Sandbox:
    """Builds the bubblewrap command line for a `Jail`; `wrap` is what the process
    supervisor calls on each argv."""

    def __init__(
        self, bwrap: str, read_only: Sequence[Path] = (), writable: Sequence[Path] = ()
    ) -> None:
        self.bwrap = bwrap
        self.read_only = tuple(Path(p) for p in read_only)
        self.writable = tuple(Path(p) for p in writable)
        # No nested user namespace (where capabilities could be had again) where the
        # kernel lets bubblewrap say so: it writes /proc/sys/user/max_user_namespaces,
        # which a systemd-nspawn host keeps read-only. Without it the mounts stay locked
        # (a nested namespace cannot remount them) and the seccomp filter of the unit holds.
        self.disable_userns = True

    @classmethod
    def find(cls, read_only: Sequence[Path] = (), *, writable: Sequence[Path] = ()) -> Sandbox:
        """The sandbox of this machine, tried once; UnavailableError says why not."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise UnavailableError(
                "the sandbox needs bubblewrap (Debian package `bubblewrap`): bwrap is not on PATH"
            )
        sandbox = cls(bwrap, read_only, writable)
        try:
            sandbox.probe()
        except UnavailableError:
            sandbox.disable_userns = False
            sandbox.probe()
        return sandbox

    def probe(self) -> float:
        """Run `true` in a sandbox like a phase's; the seconds it took. UnavailableError
        with bubblewrap's own words when the kernel or the service unit refuses."""
        scratch = Path(tempfile.gettempdir())
        started = time.monotonic()
        try:
            done = subprocess.run(
                self.argv(["/bin/true"], Jail(checkout=scratch, scratch=scratch, network=False)),
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UnavailableError(f"the sandbox (bubblewrap) cannot start: {exc}") from exc
        if done.returncode != 0:
            words = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            raise UnavailableError(
                f"the sandbox (bubblewrap) does not work here: {words} (user namespaces "
                "disabled, or the worker's unit restricts namespaces or mount calls?)"
            )
        return time.monotonic() - started

    def argv(self, argv: Sequence[str], jail: Jail) -> list[str]:
        """`argv` run inside `jail`, with HOME and TMPDIR set inside and cwd the checkout."""
        args = [
            self.bwrap,
            "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--cap-drop", "ALL",  # no tty to steal: no --new-session
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        if self.disable_userns:
            args[1:1] = ["--disable-userns"]
        if not jail.network:
            args.append("--unshare-net")
        for name in _USR_LINKS:
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        for name in _ETC:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        inside_tmp = "/tmp"  # noqa: S108  the sandbox's own, a fresh tmpfs
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", inside_tmp]
        for path in self.read_only:
            args += ["--ro-bind-try", str(path), str(path)]
        for path in self.writable:
            args += ["--bind-try", str(path), str(path)]
        if jail.shared_clone is not None:
            clone = str(jail.shared_clone)
            args += ["--ro-bind", clone, clone, "--tmpfs", f"{clone}/worktrees"]
            if jail.git_dir is not None:
                args += ["--ro-bind", str(jail.git_dir), str(jail.git_dir)]
        args += [
            "--bind", str(jail.scratch), str(jail.scratch),
            "--bind", str(jail.checkout), str(jail.checkout),
            "--setenv", "HOME", str(jail.scratch / "home"),
            "--setenv", "TMPDIR", inside_tmp,
            "--chdir", str(jail.checkout),
            "--",
            *argv,
        ]  # fmt: skip
        return args

    def wrapper(self, jail: Jail) -> Wrap:
        """What the process supervisor applies to each command of this jail: the argv
        through bubblewrap, the environment less what points at the worker's own
        agents, sockets and git settings (values stay out of argv: no --setenv)."""
        (jail.scratch / "home").mkdir(mode=0o700, parents=True, exist_ok=True)

        def wrap(argv: Sequence[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
            kept = {
                name: value
                for name, value in env.items()
                if name not in _ENV_DROP and not name.startswith(_ENV_DROP_PREFIXES)
            }
            return self.argv(argv, jail), kept

        return wrap
