"""The fleet as the Ansible inventory describes it: the hosts of group `workers`.

Loaded with Ansible's own InventoryManager and VariableManager, so group_vars,
host_vars and children mean here exactly what they mean to the playbooks.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from control.contention import throughput
from control.errors import UsageError, missing_extra
from control.names import host_name_problem
from control.pins import PROFILES
from control.scheduler import DEFAULT_SLOT_COST

WORKERS_GROUP = "workers"
TRANSPORTS: tuple[str, ...] = ("local", "ssh", "ansible")
REACHES: tuple[str, ...] = ("direct", "reverse-tunnel")
# A worker behind NAT keeps a reverse SSH tunnel open to the orchestrator's host: the
# orchestrator reaches it on that host's loopback, at the worker's reverse_tunnel_port.
TUNNEL_HOST = "127.0.0.1"
_TUNNEL_PORTS = range(1024, 65536)  # as the reverse_tunnel role checks them
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MAX_SLOTS = 64
_MAX_SLOT_COST = 10.0
# Variables Ansible adds to every host; they say nothing about the worker itself.
_MAGIC_VARS = frozenset(
    {
        "ansible_config_file",
        "ansible_facts",
        "ansible_playbook_python",
        "ansible_version",
        "group_names",
        "groups",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "omit",
        "playbook_dir",
    }
)

# Every `superagent_*` variable the code and the roles read. Any other is a typo that
# would be silently ignored (a test checks that the code and roles spell no other).
KNOWN_VARIABLES = frozenset(
    {
        "superagent_capabilities",
        "superagent_slots",
        "superagent_slot_cost",
        "superagent_transport",
        "superagent_reach",
        "superagent_queue_db",
        "superagent_control",
        "superagent_known_hosts",
        "superagent_known_hosts_file",
        "superagent_trusted_host",
        "superagent_notify",
        "superagent_notify_file",
        "superagent_slack_agent",
        "superagent_pins_profile",
        "superagent_accounts",
        "superagent_agents",
    }
)

Transport = Literal["local", "ssh", "ansible"]
Reach = Literal["direct", "reverse-tunnel"]


@dataclass(frozen=True)
class Worker:
    """One machine of the fleet, as the scheduler and the transports see it."""

    name: str
    capabilities: frozenset[str] = frozenset()
    slots: int = 1
    transport: Transport = "ansible"
    reach: Reach = "direct"
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    slot_cost: float = DEFAULT_SLOT_COST

    @property
    def throughput(self) -> float:
        """Work per minute with every slot busy, contention counted (control.scheduler)."""
        return throughput(self.slots, self.slot_cost)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capabilities": sorted(self.capabilities),
            "slots": self.slots,
            "transport": self.transport,
            "reach": self.reach,
        }


def load_inventory(directory: str | Path) -> list[Worker]:
    """The workers of `inventory/<fleet>/`, in inventory order; UsageError names what is wrong."""
    root = Path(directory)
    if not root.exists():
        raise UsageError(f"{root}: no such inventory directory")
    if not root.is_dir():
        raise UsageError(
            f"{root}: an inventory is a directory (hosts.yml, group_vars/, host_vars/)"
        )
    sources = _inventory_files(root)
    if not sources:
        raise UsageError(f"{root}: no hosts.yml (or other .yml inventory file) in the directory")
    for path in [*sources, *_vars_files(root)]:
        _check_yaml(path)

    # Imported here: Ansible takes most of a second to import, and `control validate`
    # without --inventory should not pay for it.
    try:
        from ansible.errors import AnsibleError  # noqa: PLC0415
        from ansible.inventory.manager import InventoryManager  # noqa: PLC0415
        from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
        from ansible.template import Templar  # noqa: PLC0415
        from ansible.vars.manager import VariableManager  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, f"reading the inventory {root}") from exc

    loader = DataLoader()
    try:
        with _quiet():
            manager = InventoryManager(loader=loader, sources=[str(root)])
    except AnsibleError as exc:
        raise UsageError(f"{root}: Ansible cannot read the inventory: {_first_line(exc)}") from exc
    parsed = {Path(p).resolve() for p in manager._inventory.processed_sources if p}
    for path in sources:
        if path.resolve() not in parsed:
            raise UsageError(f"{path}: not a valid YAML inventory: {_yaml_plugin_reason(path)}")
    group = manager.groups.get(WORKERS_GROUP)
    if group is None:
        raise UsageError(f"{root}: no group '{WORKERS_GROUP}'; list the worker hosts under it")
    hosts = group.get_hosts()
    if not hosts:
        raise UsageError(f"{root}: the group '{WORKERS_GROUP}' has no hosts")

    variables = VariableManager(loader=loader, inventory=manager)
    workers: list[Worker] = []
    for host in hosts:
        try:
            with _quiet():
                host_vars = variables.get_vars(host=host, include_hostvars=False)
                templar = Templar(loader=loader, variables=host_vars)
                wanted = {
                    key: _plain(templar.template(host_vars[key]))
                    for key in (
                        "superagent_capabilities",
                        "superagent_slots",
                        "superagent_transport",
                        "superagent_reach",
                        "superagent_slot_cost",
                        "superagent_pins_profile",
                        "reverse_tunnel_port",
                    )
                    if key in host_vars
                }
        except AnsibleError as exc:
            raise UsageError(f"{root}: host '{host.name}': {_first_line(exc)}") from exc
        raw = with_current_names(
            {k: _plain(v) for k, v in host_vars.items() if k not in _MAGIC_VARS}
        )
        _check_names(root, host.name, raw)
        workers.append(_worker(root, host.name, wanted, raw))
    _check_tunnel_ports(root, workers)
    return workers


# Ansible's older names for where a host is; its ssh connection takes them over the
# current ones when a host has both.
OLDER_NAMES = (("ansible_ssh_host", "ansible_host"), ("ansible_ssh_port", "ansible_port"))


def with_current_names(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with ansible_host and ansible_port where Ansible connects: set from
    ansible_ssh_host and ansible_ssh_port when those are given (they stay too)."""
    out = dict(values)
    for older, current in OLDER_NAMES:
        if out.get(older) is not None:
            out[current] = out[older]
    return out


def spells_older_names(worker: Worker) -> bool:
    return any(worker.vars.get(older) is not None for older, _ in OLDER_NAMES)


def ssh_address(worker: Worker) -> tuple[str, int]:
    """Where the orchestrator opens SSH to `worker`: through its reverse tunnel when it is
    behind NAT (TUNNEL_HOST at its reverse_tunnel_port, derived from the inventory, so
    nothing is edited after its first provisioning, which went to ansible_host), else
    ansible_host and ansible_port (or their older names, as Ansible reads them).
    UsageError names a port that is not a number."""
    v = with_current_names(worker.vars)
    if worker.reach == "reverse-tunnel":
        return TUNNEL_HOST, _tunnel_port(worker.name, v.get("reverse_tunnel_port"))
    port = v.get("ansible_port") or 22
    try:
        return str(v.get("ansible_host") or worker.name), int(port)
    except (TypeError, ValueError):
        raise UsageError(f"{worker.name}: ansible_port must be a number, not {port!r}") from None


def _tunnel_port(where: str, port: Any) -> int:
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or port not in _TUNNEL_PORTS:
        raise UsageError(
            f"{where}: superagent_reach reverse-tunnel needs reverse_tunnel_port, the port its "
            f"tunnel opens on the orchestrator's loopback (1024-65535), got {port!r}"
        )
    return port


def _check_tunnel_ports(root: Path, workers: Iterable[Worker]) -> None:
    """Each worker behind NAT has its own port: two on one port would reach the same host."""
    seen: dict[int, str] = {}
    for worker in workers:
        if worker.reach != "reverse-tunnel":
            continue
        port = ssh_address(worker)[1]
        if port in seen:
            raise UsageError(
                f"{root}: hosts '{seen[port]}' and '{worker.name}' both use "
                f"reverse_tunnel_port {port}"
            )
        seen[port] = worker.name


def _worker(root: Path, name: str, wanted: Mapping[str, Any], raw: dict[str, Any]) -> Worker:
    where = f"{root}: host '{name}'"
    if problem := host_name_problem(name):
        raise UsageError(f"{where}: {problem}")
    capabilities = wanted.get("superagent_capabilities", [])
    if capabilities is None:
        capabilities = []
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise UsageError(
            f"{where}: superagent_capabilities must be a list of labels, got {capabilities!r}"
        )
    for label in capabilities:
        if not _CAPABILITY.fullmatch(label):
            raise UsageError(
                f"{where}: capability {label!r} is not a label (lowercase letters, digits, "
                "'.', '_' and '-')"
            )
    slots = wanted.get("superagent_slots", 1)
    if isinstance(slots, str) and slots.strip().isdigit():
        slots = int(slots)  # `-e superagent_slots=2` and INI-style values arrive as text
    if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= _MAX_SLOTS:
        raise UsageError(
            f"{where}: superagent_slots must be a whole number, 1 to {_MAX_SLOTS}: {slots!r}"
        )
    transport = wanted.get("superagent_transport", "ansible")
    if transport not in TRANSPORTS:
        raise UsageError(
            f"{where}: superagent_transport must be one of {', '.join(TRANSPORTS)}, "
            f"got {transport!r}"
        )
    reach = _reach(where, wanted, raw)
    profile = wanted.get("superagent_pins_profile")
    if profile not in (None, "", *PROFILES):
        raise UsageError(
            f"{where}: superagent_pins_profile must be one of {', '.join(sorted(PROFILES))} "
            f"(control/pins.json), got {profile!r}"
        )
    slot_cost = wanted.get("superagent_slot_cost", DEFAULT_SLOT_COST)
    with contextlib.suppress(ValueError):
        if isinstance(slot_cost, str):
            slot_cost = float(slot_cost)  # `-e superagent_slot_cost=0` arrives as text
    if (
        isinstance(slot_cost, bool)
        or not isinstance(slot_cost, (int, float))
        or not 0 <= slot_cost <= _MAX_SLOT_COST
    ):
        raise UsageError(
            f"{where}: superagent_slot_cost must be a number, 0 to {_MAX_SLOT_COST:g} "
            f"(how much each agent slows the others there): {slot_cost!r}"
        )
    return Worker(name, frozenset(capabilities), slots, transport, reach, raw, float(slot_cost))


def _reach(where: str, wanted: Mapping[str, Any], raw: dict[str, Any]) -> Reach:
    reach = wanted.get("superagent_reach", "direct")
    if reach not in REACHES:
        raise UsageError(
            f"{where}: superagent_reach must be one of {', '.join(REACHES)}, got {reach!r}"
        )
    if reach == "reverse-tunnel":  # the templated value, which ssh_address reads
        raw["reverse_tunnel_port"] = _tunnel_port(where, wanted.get("reverse_tunnel_port"))
    return cast(Reach, reach)


def _check_names(root: Path, host: str, variables: Mapping[str, Any]) -> None:
    """A `superagent_*` variable nothing reads is a typo: refuse it, with the likely name."""
    for name in sorted(variables):
        if name.startswith("superagent_") and name not in KNOWN_VARIABLES:
            close = difflib.get_close_matches(name, sorted(KNOWN_VARIABLES), n=1, cutoff=0.6)
            fix = (
                f"did you mean {close[0]}?"
                if close
                else f"known: {', '.join(sorted(KNOWN_VARIABLES))}"
            )
            raise UsageError(f"{root}: host '{host}': unknown variable {name}; {fix}")


def generic_workers(count: int, capabilities: Iterable[str] = (), slots: int = 1) -> list[Worker]:
    """`count` interchangeable machines with every capability asked for: a what-if fleet."""
    if count < 1:
        raise UsageError(f"the number of workers must be at least 1, got {count}")
    caps = frozenset(capabilities)
    return [Worker(f"worker-{i}", caps, slots, "local") for i in range(1, count + 1)]


def _inventory_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_file() and p.suffix in (".yml", ".yaml") and not p.name.startswith(".")
    )


def _vars_files(root: Path) -> Iterator[Path]:
    for sub in ("group_vars", "host_vars"):
        base = root / sub
        if base.is_dir():
            yield from sorted(
                p for p in base.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", "")
            )


def _check_yaml(path: Path) -> None:
    """Report a YAML syntax error with its line, before Ansible turns it into warnings."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from exc
    if text.startswith("$ANSIBLE_VAULT"):
        return  # a whole vaulted file: Ansible decrypts it, or says why it cannot
    try:
        data = yaml.load(text, Loader=_TolerantLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: invalid YAML{where}: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top, got a {type(data).__name__}")


class _TolerantLoader(yaml.SafeLoader):
    """A SafeLoader that reads Ansible's own tags (`!vault`, `!unsafe`) as opaque values."""


def _opaque(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    return None


_TolerantLoader.add_multi_constructor("!", _opaque)


def _yaml_plugin_reason(path: Path) -> str:
    """Ask Ansible's yaml inventory plugin why it refused the file: its own words."""
    from ansible.inventory.data import InventoryData  # noqa: PLC0415
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.plugins.loader import inventory_loader  # noqa: PLC0415

    plugin = inventory_loader.get("yaml")
    try:
        with _quiet():
            plugin.parse(InventoryData(), DataLoader(), str(path), cache=False)
    except Exception as exc:  # any refusal is the answer we want to show
        return _first_line(exc)
    return "Ansible could not parse it"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep Ansible's warnings off the terminal: failures become one UsageError instead."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def _plain(value: Any) -> Any:
    """Ansible's tagged strings, lists and dicts as plain Python values (JSON-ready)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):  # bool first: it is an int too
        if isinstance(value, kind):
            return kind(value)
    if value is None:
        return None
    return f"<{type(value).__name__}>"  # e.g. a vaulted value: never decrypted here
