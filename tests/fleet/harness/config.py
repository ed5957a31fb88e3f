"""Where the fleet lives and how it is addressed: directories, the base image's recipe,
the bridge, the NAT LAN, the proxy's allow-list, and the tools it needs on this machine."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FLEET_DIR = Path(os.environ.get("SUPERAGENT_FLEET_DIR", REPO / ".fleet"))
STATE_DIR = Path(os.environ.get("SUPERAGENT_FLEET_STATE", "/var/lib/superagent-fleet"))
CACHE_DIR = Path(os.environ.get("SUPERAGENT_FLEET_CACHE", "/var/cache/superagent-fleet"))

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "ca-certificates",
    "xz-utils",
    "procps",
    "less",
    # what the worker role needs, so provisioning does not depend on apt
    "python3-venv",
    "git",
    "sqlite3",
)
# Bump when the base's customisation below changes: it is part of the cache key.
BASE_RECIPE = 3

BRIDGE = "sabr0"
BRIDGE_ADDRESS = "10.77.0.1"
BRIDGE_MAC = "02:77:00:00:00:01"
SUBNET = "10.77.0"
PROXY_PORT = 8888
PROXY_URL = f"http://{BRIDGE_ADDRESS}:{PROXY_PORT}"
# The only names the proxy lets through: the Debian mirror and the npm registry.
PROXY_ALLOW = ("deb.debian.org", "registry.npmjs.org")
# A host behind NAT sits on this LAN, behind a router namespace that masquerades it
# onto the bridge; the orchestrator has no route to it.
NAT_SUBNET = "192.168.77"
ROUTER_NS = "sa-router"
ROUTER_ADDRESS = f"{SUBNET}.254"
# The tunnel endpoint (the "orchestrator's host" sshd) listens here, in the root namespace.
GATEWAY_PORT = 2222

TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "tinyproxy": "tinyproxy-bin",
    "zstd": "zstd",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
    "nft": "nftables",
    "npm": "npm",
}
