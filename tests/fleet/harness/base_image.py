"""The base root filesystem every host overlays: debootstrap once, customised (no host
identity, fast-failing DNS, the proxy, this machine's CAs), cached as a zstd tarball keyed
on its recipe."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from tests.fleet.harness.config import (
    BASE_PACKAGES,
    BASE_RECIPE,
    CACHE_DIR,
    MIRROR,
    PROXY_URL,
    SUITE,
)
from tests.fleet.harness.system import log, run


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
