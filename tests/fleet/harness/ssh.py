"""SSH to the hosts the orchestrator's way (the fleet key, host keys checked, no agent),
and the known_hosts and control sockets that go with it."""

from __future__ import annotations

from pathlib import Path

from tests.fleet.harness.host import Host
from tests.fleet.harness.system import run


def ssh_argv(
    host: Host, key: Path, known_hosts: Path, user: str = "root", port: int | None = None,
    address: str | None = None,
) -> list[str]:  # fmt: skip
    """ssh to a host the orchestrator's way: the fleet key, host keys checked."""
    return [
        "ssh",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-p",
        str(port or host.vars.get("ansible_port") or host.ssh_port),
        f"{user}@{address or host.vars.get('ansible_host') or host.address}",
    ]


def forget_host_keys(host: Host, known_hosts: Path) -> None:
    """Remove the host's keys (its address, and its tunnel port if any) from known_hosts."""
    if not known_hosts.exists():
        return
    names = [host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"]
    if "reverse_tunnel_port" in host.vars:
        names.append(f"[127.0.0.1]:{host.vars['reverse_tunnel_port']}")
    for known in names:
        run(["ssh-keygen", "-R", known, "-f", known_hosts], check=False)
    Path(str(known_hosts) + ".old").unlink(missing_ok=True)


def close_masters(control_path_dir: Path) -> None:
    """End Ansible's persistent SSH connections (a master outlives a host-key change)."""
    if not control_path_dir.is_dir():
        return
    for sock in control_path_dir.iterdir():
        run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "fleet-host"],
            check=False,
            timeout=10,
        )
        sock.unlink(missing_ok=True)
