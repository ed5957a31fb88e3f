"""The fleet from a real Ansible inventory directory, and every way one can be wrong."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from control import __version__, pins
from control.errors import UsageError
from control.health import fleet_pins, pins_of
from control.inventory import (
    KNOWN_VARIABLES,
    Worker,
    generic_workers,
    load_inventory,
    ssh_address,
)

ROOT = Path(__file__).resolve().parents[2]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


HOSTS = """\
    all:
      children:
        workers:
          hosts:
            alpha:
            beta:
    """


def test_the_example_fleet() -> None:
    workers = {w.name: w for w in load_inventory(ROOT / "inventory" / "example")}
    assert list(workers) == ["server", "laptop", "wsl"]
    assert workers["server"].capabilities >= {"linux", "docker", "gpu"}
    assert workers["server"].slots == 2
    assert workers["laptop"] == Worker("laptop", frozenset({"linux"}), 1, "ansible", "direct")
    assert workers["wsl"].capabilities == {"linux", "windows-files"}
    assert workers["wsl"].reach == "reverse-tunnel"
    # Behind NAT: reached at its tunnel's end, whatever address its first provisioning used.
    assert ssh_address(workers["wsl"]) == ("127.0.0.1", 2201)
    assert workers["wsl"].vars["ansible_host"] != "127.0.0.1"
    assert ssh_address(workers["server"]) == ("server", 22)


def test_group_vars_children_and_host_vars_apply_as_in_ansible(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "hosts.yml": """\
                all:
                  children:
                    workers:
                      children:
                        gpus:
                          hosts:
                            alpha:
                              superagent_slots: 3
                      hosts:
                        beta:
                    others:
                      hosts:
                        gamma:
                """,
            "group_vars/all.yml": 'base: [linux]\nsuperagent_capabilities: "{{ base }}"\n',
            "group_vars/gpus.yml": "superagent_capabilities: \"{{ base + ['gpu'] }}\"\n",
            "host_vars/beta.yml": "superagent_transport: ssh\nk: !vault |\n  $ANSIBLE_VAULT;1.1\n",
        },
    )
    workers = {w.name: w for w in load_inventory(root)}
    assert set(workers) == {"alpha", "beta"}  # gamma is not in group workers
    assert workers["alpha"].capabilities == {"linux", "gpu"}
    assert workers["alpha"].slots == 3
    assert workers["beta"].capabilities == {"linux"}
    assert workers["beta"].transport == "ssh"
    assert workers["alpha"].vars["superagent_slots"] == 3
    assert "inventory_hostname" not in workers["alpha"].vars
    assert workers["beta"].to_dict() == {
        "name": "beta",
        "capabilities": ["linux"],
        "slots": 1,
        "transport": "ssh",
        "reach": "direct",
    }


def test_slots_given_as_text_are_read_as_a_number(tmp_path: Path) -> None:
    root = write(
        tmp_path, {"hosts.yml": HOSTS, "group_vars/workers.yml": "superagent_slots: '2'\n"}
    )
    assert [w.slots for w in load_inventory(root)] == [2, 2]


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({}, "no hosts.yml"),
        ({"hosts.yml": "all:\n  children: [\n"}, "hosts.yml: invalid YAML at line 3"),
        (
            {"hosts.yml": "- alpha\n- beta\n"},
            "hosts.yml: expected a mapping at the top, got a list",
        ),
        (
            {"hosts.yml": "all:\n  children:\n    workers:\n      hosts: [alpha]\n"},
            'not a valid YAML inventory: Invalid "hosts" entry for "workers" group',
        ),
        ({"hosts.yml": "all:\n  hosts:\n    alpha:\n"}, "no group 'workers'"),
        ({"hosts.yml": "all:\n  children:\n    workers:\n"}, "the group 'workers' has no hosts"),
        (
            {"hosts.yml": HOSTS, "host_vars/alpha.yml": "superagent_slots: [\n"},
            "alpha.yml: invalid YAML at line 2",
        ),
        (
            {"hosts.yml": HOSTS, "host_vars/alpha.yml": "superagent_slots: 0\n"},
            "host 'alpha': superagent_slots must be a whole number, 1 to 64: 0",
        ),
        (
            {"hosts.yml": HOSTS, "host_vars/beta.yml": "superagent_slots: two\n"},
            "host 'beta': superagent_slots must be a whole number, 1 to 64: 'two'",
        ),
        (
            {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_slots: true\n"},
            "superagent_slots must be a whole number, 1 to 64: True",
        ),
        (
            {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_capabilities: linux\n"},
            "superagent_capabilities must be a list of labels, got 'linux'",
        ),
        (
            {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_capabilities: [Linux]\n"},
            "capability 'Linux' is not a label",
        ),
        (
            {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_transport: telnet\n"},
            "superagent_transport must be one of local, ssh, ansible, got 'telnet'",
        ),
        (
            {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_reach: carrier-pigeon\n"},
            "superagent_reach must be one of direct, reverse-tunnel, got 'carrier-pigeon'",
        ),
        (
            {"hosts.yml": HOSTS, "host_vars/beta.yml": "superagent_reach: reverse-tunnel\n"},
            "host 'beta': superagent_reach reverse-tunnel needs reverse_tunnel_port, the port "
            "its tunnel opens on the orchestrator's loopback (1024-65535), got None",
        ),
        (
            {
                "hosts.yml": HOSTS,
                "host_vars/beta.yml": "superagent_reach: reverse-tunnel\nreverse_tunnel_port: 22\n",
            },
            "host 'beta': superagent_reach reverse-tunnel needs reverse_tunnel_port",
        ),
        (
            {
                "hosts.yml": HOSTS,
                "group_vars/all.yml": "superagent_reach: reverse-tunnel\n"
                "reverse_tunnel_port: 2201\n",
            },
            "hosts 'alpha' and 'beta' both use reverse_tunnel_port 2201",
        ),
        (
            {"hosts.yml": HOSTS, "group_vars/all.yml": 'superagent_slots: "{{ undefined_x }}"\n'},
            "host 'alpha'",
        ),
        (
            {"hosts.yml": "all:\n  children:\n    workers:\n      hosts:\n        a$b:\n"},
            "host 'a$b': a worker name may hold only letters",
        ),
    ],
)
def test_a_bad_inventory_is_a_usage_error_naming_the_file_or_host(
    tmp_path: Path, files: dict[str, str], words: str
) -> None:
    root = write(tmp_path / "fleet", files) if files else tmp_path
    with pytest.raises(UsageError) as caught:
        load_inventory(root)
    assert words in str(caught.value)


def test_missing_directory_and_a_file_instead(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such inventory directory"):
        load_inventory(tmp_path / "nope")
    (tmp_path / "hosts.yml").write_text(HOSTS)
    with pytest.raises(UsageError, match="an inventory is a directory"):
        load_inventory(tmp_path / "hosts.yml")


def test_generic_workers() -> None:
    workers = generic_workers(3, {"gpu"})
    assert [w.name for w in workers] == ["worker-1", "worker-2", "worker-3"]
    assert all(w.capabilities == {"gpu"} and w.slots == 1 for w in workers)
    with pytest.raises(UsageError, match="at least 1"):
        generic_workers(0)


def test_a_misspelt_superagent_variable_is_refused_with_the_likely_name(tmp_path: Path) -> None:
    root = write(
        tmp_path, {"hosts.yml": HOSTS, "host_vars/beta.yml": "superagent_transprot: ssh\n"}
    )
    with pytest.raises(UsageError) as caught:
        load_inventory(root)
    assert str(caught.value) == (
        f"{root}: host 'beta': unknown variable superagent_transprot; "
        "did you mean superagent_transport?"
    )


def test_validate_and_dispatch_refuse_the_misspelt_variable(tmp_path: Path) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from control.cli import app  # noqa: PLC0415

    root = write(
        tmp_path / "fleet", {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_slotz: 2\n"}
    )
    spec = ROOT / "specs" / "examples" / "tiny.json"
    for command in (
        ["validate", str(spec)],
        ["dispatch", str(spec), "--state", str(tmp_path / "s.db")],
    ):
        result = CliRunner().invoke(app, [*command, "--inventory", str(root)])
        assert result.exit_code == 2, result.output
        assert "unknown variable superagent_slotz; did you mean superagent_slots?" in result.output
    assert not (tmp_path / "s.db").exists()


def test_every_superagent_variable_the_code_and_roles_read_is_known() -> None:
    """A variable added to a role or to the code must be added to KNOWN_VARIABLES, or
    every inventory that sets it would be refused as a typo."""
    spelt: set[str] = set()
    for folder in ("roles", "playbooks", "control", "inventory", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yml", ".yaml", ".j2", ".md", ""):
                spelt |= set(
                    re.findall(r"\bsuperagent_[a-z0-9_]*[a-z0-9]", path.read_text(errors="replace"))
                )
    assert spelt - KNOWN_VARIABLES == set()
    assert "superagent_transport" in spelt


def test_slot_cost_per_host(tmp_path: Path) -> None:
    """superagent_slot_cost: how much each agent on a machine slows the others (issue 20)."""
    root = write(
        tmp_path,
        {
            "hosts.yml": HOSTS,
            "host_vars/alpha.yml": "superagent_slot_cost: 0\n",
            "host_vars/beta.yml": "superagent_slot_cost: '1.5'\n",
        },
    )
    assert [w.slot_cost for w in load_inventory(root)] == [0.0, 1.5]
    plain = write(tmp_path / "plain", {"hosts.yml": HOSTS})
    assert [w.slot_cost for w in load_inventory(plain)] == [0.5, 0.5]  # the default


@pytest.mark.parametrize("value", ["-1", "11", "fast", "true", ".nan", "[1]"])
def test_a_bad_slot_cost_is_a_usage_error(tmp_path: Path, value: str) -> None:
    root = write(
        tmp_path, {"hosts.yml": HOSTS, "host_vars/beta.yml": f"superagent_slot_cost: {value}\n"}
    )
    with pytest.raises(
        UsageError, match=r"host 'beta': superagent_slot_cost must be a number, 0 to 10"
    ):
        load_inventory(root)


def test_a_pins_profile_moves_the_pins_a_run_records(tmp_path: Path) -> None:
    """superagent_pins_profile names a line of control/pins.json; a version set on its
    own still wins (the roles read them in the same order)."""
    root = write(
        tmp_path,
        {
            "hosts.yml": HOSTS,
            "group_vars/all.yml": "superagent_pins_profile: node22\n",
            "host_vars/beta.yml": "nodejs_version: 22.0.1\n",
        },
    )
    line = pins.profile("node22")
    alpha, beta = load_inventory(root)
    assert pins_of(alpha) == {
        "superagent": __version__,
        "node": line["node"]["version"],
        "claude_code": line["claude_code"]["version"],
    }
    assert pins_of(beta)["node"] == "22.0.1"
    assert fleet_pins([alpha, beta]) == {
        "superagent": __version__,
        "claude_code": line["claude_code"]["version"],
    }


def test_an_unknown_pins_profile_is_refused(tmp_path: Path) -> None:
    root = write(
        tmp_path, {"hosts.yml": HOSTS, "group_vars/all.yml": "superagent_pins_profile: n\n"}
    )
    with pytest.raises(UsageError, match=r"superagent_pins_profile must be one of node22"):
        load_inventory(root)


def test_older_address_names_are_read_as_ansible_reads_them(tmp_path: Path) -> None:
    """ansible_ssh_host and ansible_ssh_port win over ansible_host and ansible_port in
    Ansible's ssh connection; loaded, a worker's current names say the same, and the
    ssh transport connects where Ansible would."""
    root = write(
        tmp_path,
        {
            "hosts.yml": """\
                all:
                  children:
                    workers:
                      hosts:
                        old:
                          ansible_host: 10.0.0.1
                          ansible_port: 2200
                          ansible_ssh_host: 10.0.0.2
                          ansible_ssh_port: 2222
                        older:
                          ansible_ssh_host: 10.0.0.3
                        current:
                          ansible_host: 10.0.0.4
                          ansible_port: 2204
                """,
        },
    )
    workers = {w.name: w for w in load_inventory(root)}
    assert ssh_address(workers["old"]) == ("10.0.0.2", 2222)
    assert (workers["old"].vars["ansible_host"], workers["old"].vars["ansible_port"]) == (
        "10.0.0.2",
        2222,
    )
    assert ssh_address(workers["older"]) == ("10.0.0.3", 22)
    assert ssh_address(workers["current"]) == ("10.0.0.4", 2204)
    built = Worker("built", vars={"ansible_port": 1, "ansible_ssh_port": 2})  # not loaded
    assert ssh_address(built) == ("built", 2)
