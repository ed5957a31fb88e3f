"""Booting and powering hosts: systemd-nspawn from the host's own cgroups, waiting for its
systemd and sshd, commands inside it through nsenter, SIGTERM to power it off."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from tests.fleet.harness.cgroups import make_cgroups
from tests.fleet.harness.host import Host
from tests.fleet.harness.system import FleetError, alive, children, log, run, wait_gone


def boot(host: Host, root: Path, logs: Path) -> None:
    """Start the host's systemd-nspawn (its pid in `host.pid`); returns at once."""
    argv = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "-D",
        str(root),
        "-M",
        host.name,
    ]
    if host.netns:
        argv.append(f"--network-namespace-path=/run/netns/{host.netns}")
    argv.append("-b")
    # Each container from its own cgroup: with --keep-unit, containers started from
    # one cgroup share it, and a unit's processes would then mix hosts.
    cgroups = make_cgroups(host.name)
    wrapper = 'for d in $SA_CGROUPS; do echo $$ > "$d/cgroup.procs"; done; exec "$@"'
    env = {**os.environ, "SA_CGROUPS": " ".join(str(c) for c in cgroups)}
    with (logs / f"{host.name}.console.log").open("ab") as out:
        process = subprocess.Popen(
            ["/bin/sh", "-c", wrapper, "sh", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    host.pid = process.pid


def init_pid(host: Host, logs: Path, timeout: float = 30) -> int:
    """The container's PID 1 (systemd), as this machine sees it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not host.pid or not alive(host.pid):
            console = logs / f"{host.name}.console.log"
            raise FleetError(f"{host.name}: systemd-nspawn exited; see {console}")
        for child in children(host.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return child
        time.sleep(0.1)
    raise FleetError(f"{host.name}: no systemd inside the container after {timeout:.0f}s")


def nsenter(
    pid: int, argv: Sequence[str], *, check: bool = True, input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run `argv` inside the container whose PID 1 is `pid` (all its namespaces)."""
    return run(["nsenter", "-t", str(pid), "-a", *argv], check=check, input=input, timeout=timeout)


def wait_ready(host: Host, logs: Path, timeout: float = 90) -> None:
    """Until the host's systemd is running and its sshd answers (a NAT'd one: is active)."""
    pid = init_pid(host, logs)
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        # Until systemd's private socket exists, systemctl fails at once: ask again.
        done = run(
            ["nsenter", "-t", str(pid), "-a", "systemctl", "is-system-running", "--wait"],
            check=False,
            timeout=timeout,
        )
        state = done.stdout.strip()
        if state in ("running", "degraded", "stopping", "maintenance"):
            break
        time.sleep(0.2)
    if state not in ("running", "degraded"):
        raise FleetError(f"{host.name}: systemd is {state or 'not answering'} after boot")
    if state == "degraded":
        failed = nsenter(init_pid(host, logs), ["systemctl", "--failed", "--no-legend", "--plain"])
        log(f"{host.name} booted degraded: {failed.stdout.strip()}")
    active = nsenter(init_pid(host, logs), ["systemctl", "is-active", "ssh.service"], check=False)
    if active.stdout.strip() != "active":
        raise FleetError(f"{host.name}: sshd is {active.stdout.strip()}")
    if host.kind != "nat":  # a NAT'd host is unreachable from here on purpose
        _wait_port(host, deadline)


def _wait_port(host: Host, deadline: float) -> None:
    while True:
        try:
            socket.create_connection((host.address, host.ssh_port), timeout=2).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise FleetError(f"{host.name}: no sshd at {host.address}: {exc}") from exc
            time.sleep(0.2)


def power_off(host: Host, timeout: float = 20) -> None:
    """SIGTERM to the host's nspawn (systemd shuts down), SIGKILL if it lingers; its disk stays."""
    if host.pid and alive(host.pid):
        os.kill(host.pid, signal.SIGTERM)
        if not wait_gone(host.pid, timeout):
            os.kill(host.pid, signal.SIGKILL)
            wait_gone(host.pid, 5)
    host.pid = None
