"""The hosts' only egress: tinyproxy on the bridge address, allowing the Debian mirror and
the npm registry (HTTP and CONNECT 443) and denying the rest."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.fleet.harness.config import BRIDGE_ADDRESS, PROXY_ALLOW, PROXY_PORT, SUBNET
from tests.fleet.harness.system import FleetError, group_exists, user_exists


def start_proxy(state_dir: Path, logs: Path) -> subprocess.Popen[bytes]:
    """Start tinyproxy in its own session; its process once it accepts connections."""
    proxy_dir = state_dir / "proxy"
    proxy_dir.mkdir(parents=True, exist_ok=True)
    user = "tinyproxy" if user_exists("tinyproxy") else "nobody"
    group = "tinyproxy" if group_exists("tinyproxy") else "nogroup"
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
    with (logs / "tinyproxy.out").open("ab") as out:
        process = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    return process


def wait_listening(process: subprocess.Popen[bytes], logs: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection((BRIDGE_ADDRESS, PROXY_PORT), timeout=1),
        ):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise FleetError(f"tinyproxy did not start; see {logs / 'tinyproxy.out'}")
