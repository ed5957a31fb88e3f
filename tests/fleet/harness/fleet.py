"""`Fleet`: the fleet on this machine as one object (its hosts, network, proxy, keys and
inventory), kept in a state file so a later session or `make fleet-down` finds it. Each
concern is a module of its own; this class holds the state and puts them in order."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.fleet.harness import inventory, network, nspawn, ssh
from tests.fleet.harness.base_image import ensure_base
from tests.fleet.harness.cgroups import remove_cgroups
from tests.fleet.harness.config import BRIDGE, FLEET_DIR, STATE_DIR
from tests.fleet.harness.host import NAME, Host
from tests.fleet.harness.playbook import PlaybookRun, ansible_env, run_playbook
from tests.fleet.harness.proxy import start_proxy, wait_listening
from tests.fleet.harness.rootfs import make_root
from tests.fleet.harness.system import (
    FleetError,
    alive,
    delete_link,
    locked,
    log,
    missing_requirements,
    run,
    unmount,
    wait_gone,
)


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
        return locked(self.state_dir / "lock")

    # -- queries ------------------------------------------------------------------------

    def running(self, name: str) -> bool:
        host = self.hosts.get(name)
        return bool(host and host.pid and alive(host.pid))

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
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                 "superagent-fleet-orchestrator", "-f", self.key])  # fmt: skip
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
        network.ensure_bridge()
        self._proxy()

    def _add(self, name: str, kind: str, inventory_vars: dict[str, Any] | None = None) -> Host:
        if not NAME.match(name):
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
        # A fresh host: a key this checkout recorded for its address is stale (the fleet's
        # state is the machine's, known_hosts the checkout's: another checkout's session
        # may have replaced the hosts since).
        ssh.forget_host_keys(host, self.known_hosts)
        try:
            make_root(host, self._top(host.name), self.base, self.key.with_suffix(".pub"))
            network.wire(host)
            nspawn.boot(host, self._root(host), self.logs)
            self._save()
            nspawn.wait_ready(host, self.logs)
        except BaseException:
            self._save()
            raise
        log(f"{name} is up at {host.address}:{host.ssh_port}")
        return host

    def _top(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    def _root(self, host: Host) -> Path:
        return self._top(host.name) / "root"

    def route_to_nat(self, present: bool) -> None:
        """Give the orchestrator a route to the NAT LAN (a first provisioning), or take it away."""
        network.route_to_nat(present)

    # -- the proxy ---------------------------------------------------------------------

    def _proxy_alive(self) -> bool:
        return bool(self.proxy_pid and alive(self.proxy_pid))

    def _proxy(self) -> None:
        if self._proxy_alive():
            return
        process = start_proxy(self.state_dir, self.logs)
        self.proxy_pid = process.pid
        self._save()
        wait_listening(process, self.logs)

    # -- power ------------------------------------------------------------------------

    def stop_host(self, name: str, timeout: float = 20) -> None:
        """Power a host off (SIGTERM to its nspawn: systemd shuts down), keeping its disk."""
        nspawn.power_off(self.hosts[name], timeout)
        self._save()
        remove_cgroups(name)

    def start_host(self, name: str) -> None:
        """Power a stopped host back on, with the disk it had."""
        with self.lock():
            host = self.hosts[name]
            if self.running(name):
                return
            remove_cgroups(name)
            nspawn.boot(host, self._root(host), self.logs)
            self._save()
            nspawn.wait_ready(host, self.logs)

    # -- changing and removing hosts ----------------------------------------------------

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
        top = self._top(name)
        unmount(top / "root")
        network.unwire(host)
        if top.exists():
            shutil.rmtree(top)
        network.forget_neighbour(host)
        ssh.forget_host_keys(host, self.known_hosts)
        del self.hosts[name]
        self._save()

    def down(self) -> None:
        """Remove every host, the router, the bridge and the proxy; keep the caches."""
        with self.lock():
            # Power everything off at once (about 2 s each, in parallel), then clean up.
            for host in self.hosts.values():
                if host.pid and alive(host.pid):
                    os.kill(host.pid, signal.SIGTERM)
            for name in list(self.hosts):
                self._remove(name)
            network.remove_shared()
            if self._proxy_alive():
                assert self.proxy_pid is not None
                os.kill(self.proxy_pid, signal.SIGTERM)
                wait_gone(self.proxy_pid, 5)
            self.proxy_pid = None
            delete_link(BRIDGE)
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
        return inventory.group_vars(self.key, self.known_hosts)

    def write_inventory(self) -> None:
        """.fleet/inventory: hosts.yml, group_vars/all/{main,vault}.yml."""
        inventory.write_inventory(
            self.inventory_dir, list(self.hosts.values()), self.inventory_vars(),
            self.api_key or "", self.vault_password_file,
        )  # fmt: skip

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
        pid = nspawn.init_pid(self.hosts[name], self.logs)
        return nspawn.nsenter(pid, argv, check=check, input=input, timeout=timeout)

    def ssh_argv(
        self, name: str, user: str = "root", port: int | None = None, address: str | None = None
    ) -> list[str]:
        """ssh to a host the orchestrator's way: the fleet key, host keys checked."""
        return ssh.ssh_argv(self.hosts[name], self.key, self.known_hosts, user, port, address)

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
        return ansible_env(self.control_path_dir, self.vault_password_file)

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
        return run_playbook(
            playbook, inventory_dir=self.inventory_dir, env=self.ansible_env(), logs=self.logs,
            limit=limit, tags=tags, extra_vars=extra_vars, timeout=timeout, label=label,
        )  # fmt: skip

    def close_ssh_masters(self) -> None:
        """End Ansible's persistent SSH connections (a master outlives a host-key change)."""
        ssh.close_masters(self.control_path_dir)
