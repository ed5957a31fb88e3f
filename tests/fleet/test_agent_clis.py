"""Agent CLIs and accounts on a real host: a host whose inventory gives it a codex account
gets the pinned codex (its `--version` the pin, checked by the worker and in its heartbeat)
and the account's credential, 0600 and the worker user's, which the worker reads."""

from __future__ import annotations

import hashlib

import pytest

from control.pins import WORKER_VENV, load
from tests.fleet.conftest import Provisioning, heartbeat, wait_heartbeat, worker_check

pytestmark = pytest.mark.fleet

HOST = "host2"
CODEX = load()["agents"]["codex"]["version"]
SECRET = "sk-proj-FLEET-STAND-IN-abcdefghijklmnopqrstuvwxyz0123456789"
ACCOUNT = {"name": "codex-fleet", "agent": "codex", "hosts": [HOST],
           "credential_var": "vault_codex_fleet_env"}  # fmt: skip
ENV_FILE = "/etc/superagent/accounts/codex-fleet.env"
# The worker's own code, as the worker user: the task's account gives this file, which
# load_credentials accepts only at 0600; it prints the names it holds, never a value.
READ = (
    "from control.worker.config import load_config; "
    "from control.worker.secrets import account_credential; "
    "from control.worker.agents.base import load_credentials; "
    "path = account_credential(load_config(None), 'codex-fleet'); "
    "print(path, sorted(load_credentials(path)))"
)


def _stat(provisioned: Provisioning, path: str) -> str:
    return provisioned.fleet.exec(HOST, ["stat", "-c", "%a %U", path]).stdout.strip()


def test_a_host_with_a_codex_account_gets_the_pinned_cli_and_the_credential(
    provisioned: Provisioning,
) -> None:
    fleet = provisioned.fleet
    before = heartbeat(fleet, HOST)["beat_at"]
    fleet.set_host_vars(
        HOST, superagent_accounts=[ACCOUNT], vault_codex_fleet_env=f"OPENAI_API_KEY={SECRET}"
    )
    try:
        run = fleet.playbook(limit=HOST, label="agent-clis")
        assert run.rc == 0, run.tail()
        assert SECRET not in run.output  # no_log
        said = fleet.exec(HOST, ["/usr/local/bin/codex", "--version"]).stdout.split()
        assert said == ["codex-cli", CODEX]
        assert fleet.exec(HOST, ["readlink", "/opt/superagent/codex"]).stdout.strip() == (
            f"/opt/superagent/codex-{CODEX}"
        )
        # The worker's check pins it, and so does the running daemon's heartbeat.
        code, report = worker_check(fleet, HOST)
        assert code == 0, report
        assert report["versions"]["codex"] == CODEX
        beat = wait_heartbeat(fleet, HOST, ("idle", "busy"), after=before)
        assert beat["versions"]["codex"] == CODEX, beat

        assert _stat(provisioned, ENV_FILE) == "600 superagent"
        assert _stat(provisioned, "/etc/superagent/accounts") == "700 superagent"
        digest = fleet.exec(HOST, ["sha256sum", ENV_FILE]).stdout.split()[0]
        expected = hashlib.sha256(f"OPENAI_API_KEY={SECRET}\n".encode()).hexdigest()
        assert digest == expected
        read = fleet.exec(
            HOST, ["sudo", "-u", "superagent", f"{WORKER_VENV}/bin/python", "-c", READ]
        ).stdout.strip()
        assert read == f"{ENV_FILE} ['OPENAI_API_KEY']"
        others = fleet.exec(HOST, ["sudo", "-u", "nobody", "cat", ENV_FILE], check=False)
        assert others.returncode != 0

        again = fleet.playbook(limit=HOST, label="agent-clis-again")
        assert again.rc == 0 and again.changed() == 0, again.changed_tasks()
    finally:
        fleet.set_host_vars(HOST, superagent_accounts=None, vault_codex_fleet_env=None)
        restore = fleet.playbook(limit=HOST, label="agent-clis-restore")
    assert restore.rc == 0, restore.tail()
    # The account is gone from this host: so is its credential, and codex is no longer pinned.
    assert fleet.exec(HOST, ["test", "-e", ENV_FILE], check=False).returncode == 1
    code, report = worker_check(fleet, HOST)
    assert code == 0 and "codex" not in report["versions"], report
