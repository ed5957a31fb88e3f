"""A host's disk: an overlay on the base image with its own identity (hostname, machine-id,
SSH host key) and the orchestrator's key for root."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from tests.fleet.harness.config import BRIDGE_ADDRESS, GATEWAY_PORT
from tests.fleet.harness.host import Host
from tests.fleet.harness.system import run, unmount


def make_root(host: Host, top: Path, base: Path, public_key: Path) -> Path:
    """Mount `top`/root (an overlay on `base`) and give it the host's identity; the root."""
    if top.exists():
        unmount(top / "root")
        shutil.rmtree(top)
    for sub in ("upper", "work", "root"):
        (top / sub).mkdir(parents=True)
    root = top / "root"
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={base},upperdir={top / 'upper'},workdir={top / 'work'}",
            root,
        ]
    )
    (root / "etc/hostname").write_text(host.name + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n::1\tlocalhost ip6-localhost\n"
    )
    (root / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")
    run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            f"root@{host.name}",
            "-f",
            root / "etc/ssh/ssh_host_ed25519_key",
        ]
    )
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key.read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    if host.kind == "gateway":
        # The orchestrator's host shares this machine's network: listen on the bridge only.
        (root / "etc/ssh/sshd_config.d/05-gateway.conf").write_text(
            f"Port {GATEWAY_PORT}\nListenAddress {BRIDGE_ADDRESS}\n"
        )
    return root
