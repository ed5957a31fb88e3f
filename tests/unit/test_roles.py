"""The Ansible roles document and declare themselves: a README per role naming every input
of its argument specs, every public default declared there, handlers that do nothing in
check mode, and notifications that cross roles written down on both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())
SERVICE_MODULES = {"ansible.builtin.systemd_service", "ansible.builtin.service"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def _options(role: str) -> dict[str, Any]:
    specs = _yaml(REPO / "roles" / role / "meta" / "argument_specs.yml")
    options: dict[str, Any] = specs["argument_specs"]["main"]["options"]
    return options


def _tasks(role: str) -> list[dict[str, Any]]:
    """Every task of the role, blocks flattened."""
    found: list[dict[str, Any]] = []

    def walk(tasks: list[Any]) -> None:
        for task in tasks or []:
            found.append(task)
            for key in ("block", "rescue", "always"):
                walk(task.get(key, []))

    for path in sorted((REPO / "roles" / role / "tasks").glob("*.yml")):
        walk(_yaml(path) or [])
    return found


def _handlers(role: str) -> list[dict[str, Any]]:
    return list(_yaml(REPO / "roles" / role / "handlers" / "main.yml") or [])


def test_there_are_roles() -> None:
    assert {"nodejs", "claude_code", "worker", "reverse_tunnel", "tunnel_endpoint"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_readme_with_its_variables_and_an_example(role: str) -> None:
    readme = REPO / "roles" / role / "README.md"
    assert readme.is_file(), f"roles/{role}/README.md is missing"
    text = readme.read_text()
    for section in ("## Variables", "## Example"):
        assert section in text, f"roles/{role}/README.md has no '{section}'"
    table = text.split("## Variables", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in _options(role) if f"| `{name}` |" not in table]
    assert missing == [], f"roles/{role}/README.md does not list {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_every_public_default_is_a_declared_input(role: str) -> None:
    defaults = _yaml(REPO / "roles" / role / "defaults" / "main.yml") or {}
    public = [name for name in defaults if not name.startswith("__")]
    undeclared = sorted(set(public) - set(_options(role)))
    assert undeclared == [], f"roles/{role}: defaults not in meta/argument_specs.yml"


@pytest.mark.parametrize("role", ROLES)
def test_service_handlers_do_nothing_in_check_mode(role: str) -> None:
    for handler in _handlers(role):
        if SERVICE_MODULES & set(handler):
            assert handler.get("when") == "not ansible_check_mode", (role, handler["name"])


def test_notifications_resolve_and_cross_roles_in_the_open() -> None:
    listeners: dict[str, set[str]] = {}  # name or topic -> roles that handle it
    for role in ROLES:
        for handler in _handlers(role):
            for name in (handler["name"], handler.get("listen")):
                if name:
                    listeners.setdefault(name, set()).add(role)
    for role in ROLES:
        for task in _tasks(role):
            notify = task.get("notify")
            for topic in [notify] if isinstance(notify, str) else notify or []:
                assert role in listeners.get(topic, set()), f"{role}: nothing handles {topic!r}"
                others = listeners[topic] - {role}
                # A notification another role acts on is named in both READMEs.
                for reader in {role, *others} if others else set():
                    readme = (REPO / "roles" / reader / "README.md").read_text()
                    assert f"`{topic}`" in readme, f"roles/{reader}/README.md: {topic!r}"
