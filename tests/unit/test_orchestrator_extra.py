"""A worker's install has none of the orchestrator's extra (Ansible, paramiko, Slack,
Apprise): the worker's own commands never import them, and an orchestrator command run
there says which module is missing and how to get it, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from control.errors import UnavailableError
from control.inventory import load_inventory
from control.transport import Transports

EXTRA = (
    "ansible",
    "ansible_runner",
    "paramiko",
    "slack_sdk",
    "slack_bolt",
    "apprise",
    "starlette",
    "uvicorn",
)


def test_the_worker_side_imports_nothing_of_the_extra() -> None:
    probe = (
        "import sys, control.cli, control.worker.daemon, control.rpc, control.worker.phase\n"
        f"print([m for m in {EXTRA!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _without(monkeypatch: pytest.MonkeyPatch, missing: str, *reloaded: str) -> None:
    """`missing` cannot be imported; `reloaded` (which import it) are imported afresh."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in (missing, *reloaded)):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # type: ignore[arg-type]


def test_reading_an_inventory_without_ansible_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = "all:\n  children:\n    workers:\n      hosts:\n        w1:\n"
    (tmp_path / "hosts.yml").write_text(hosts)
    _without(monkeypatch, "ansible")
    with pytest.raises(UnavailableError, match=r"needs ansible.*superagent\[orchestrator\]"):
        load_inventory(tmp_path)


def test_the_ssh_transport_without_paramiko_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without(monkeypatch, "paramiko", "control.transport.ssh")
    with pytest.raises(UnavailableError, match=r"ssh transport needs paramiko"):
        Transports().for_kind("ssh")
