"""Agent CLIs and accounts on a real host: a host whose inventory gives it a codex account
gets the pinned codex (its `--version` the pin, checked by the worker and in its heartbeat)
and the account's credential, 0600 and the worker user's, which the worker reads. A Claude
Code account there gets its own configuration directory (0700, the worker user's), and a
phase run on that account runs the real, pinned `claude` in it, its key never in a log."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from control.messages import PhaseTask
from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB, WORKER_VENV, load
from tests.fleet.conftest import Provisioning, heartbeat, wait_heartbeat, worker_check

pytestmark = pytest.mark.fleet

HOST = "host2"
CODEX = load()["agents"]["codex"]["version"]
SECRET = "sk-proj-FLEET-STAND-IN-abcdefghijklmnopqrstuvwxyz0123456789"
ACCOUNT = {"name": "codex-fleet", "agent": "codex", "hosts": [HOST],
           "credential_var": "vault_codex_fleet_env"}  # fmt: skip
ENV_FILE = "/etc/superagent/accounts/codex-fleet.env"
CLAUDE_SECRET = "sk-ant-api03-FLEET-STAND-IN-" + "x" * 40
# The real claude, offline: its API a closed port on loopback, no retries (an API error at
# once, the session kept in its configuration directory all the same).
CLAUDE_ENV = (f"ANTHROPIC_API_KEY={CLAUDE_SECRET}\nANTHROPIC_BASE_URL=http://127.0.0.1:9\n"
              "CLAUDE_CODE_MAX_RETRIES=0\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1")  # fmt: skip
CLAUDE_ACCOUNT = {"name": "claude-fleet", "agent": "claude-code", "hosts": [HOST],
                  "credential_var": "vault_claude_fleet_env"}  # fmt: skip
CLAUDE_DIR = "/var/lib/superagent/claude-accounts/claude-fleet"
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
    # One playbook run for both accounts (and a trusted host: its agents use the account's
    # own directory, not one in the phase's HOME), so the Claude account costs seconds.
    fleet.set_host_vars(
        HOST, superagent_accounts=[ACCOUNT, CLAUDE_ACCOUNT], superagent_trusted_host=True,
        vault_codex_fleet_env=f"OPENAI_API_KEY={SECRET}", vault_claude_fleet_env=CLAUDE_ENV,
    )  # fmt: skip
    try:
        run = fleet.playbook(limit=HOST, label="agent-clis")
        assert run.rc == 0, run.tail()
        assert SECRET not in run.output and CLAUDE_SECRET not in run.output  # no_log
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

        _a_phase_on_the_claude_account_runs_in_its_directory(provisioned)

        again = fleet.playbook(limit=HOST, label="agent-clis-again")
        assert again.rc == 0 and again.changed() == 0, again.changed_tasks()
    finally:
        fleet.set_host_vars(HOST, superagent_accounts=None, vault_codex_fleet_env=None,
                            vault_claude_fleet_env=None, superagent_trusted_host=None)  # fmt: skip
        restore = fleet.playbook(limit=HOST, label="agent-clis-restore")
    assert restore.rc == 0, restore.tail()
    # The account is gone from this host: so is its credential, and codex is no longer
    # pinned (still found on PATH, it is reported, as any agent CLI the host has).
    assert fleet.exec(HOST, ["test", "-e", ENV_FILE], check=False).returncode == 1
    code, report = worker_check(fleet, HOST)
    assert code == 0 and "codex" not in report["pins"], report


def _a_phase_on_the_claude_account_runs_in_its_directory(provisioned: Provisioning) -> None:
    """The role made the account's directory; a phase on the account, taken from the inbox
    by the running worker, runs the real claude with it as CLAUDE_CONFIG_DIR (the CLI keeps
    its state and the session's transcript there) and the key only in its environment."""
    fleet = provisioned.fleet
    assert _stat(provisioned, CLAUDE_DIR) == "700 superagent"
    assert fleet.exec(HOST, ["find", CLAUDE_DIR, "-mindepth", "1"]).stdout == ""  # unused yet
    remote = "/var/lib/superagent/claude-account.git"  # the unit has its own /tmp, /var/tmp
    fleet.exec(HOST, ["bash", "-c", SEED.format(remote=remote)])
    task = PhaseTask(
        run_id="r-claude-account", phase_id="hello", attempt=1, title="hello",
        task="Create hello.txt containing the word hello.", branch="sa/hello",
        repo_url=remote, base_branch="main", deliverables=("hello.txt",),
        agent={"backend": "claude-code", "account": "claude-fleet", "max_turns": 2},
        timeout_s=120.0, silence_s=90.0,
    )  # fmt: skip
    sent = fleet.exec(
        HOST,
        ["sudo", "-u", "superagent", WORKER_CONTROL, "queue", "enqueue", "--db",
         WORKER_QUEUE_DB, "--key", task.key, "--max-attempts", "1", "--json"],
        input=json.dumps(task.to_payload()),
    )  # fmt: skip
    message = json.loads(sent.stdout)["id"]
    deadline = time.monotonic() + 120
    while (shown := _shown(fleet, message))["state"] not in ("done", "failed", "dead"):
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    # Offline, the agent fails (an API error, never `done`) after starting its session.
    assert shown["state"] == "failed" and "API Error" in (shown.get("reason") or ""), shown
    # The CLI kept its state in the account's directory (the real one writes .claude.json
    # where CLAUDE_CONFIG_DIR says), and the session, if it kept one, nowhere else.
    assert _stat(provisioned, f"{CLAUDE_DIR}/.claude.json").endswith(" superagent")
    session = shown["response"]["agent"]["session_id"]
    assert session
    others = fleet.exec(HOST, ["find", "/var/lib/superagent", "-name", f"{session}.jsonl",
                               "-not", "-path", f"{CLAUDE_DIR}/*"]).stdout  # fmt: skip
    assert others.strip() == ""  # not in the worker's own ~/.claude, nor another account's
    log = fleet.exec(HOST, ["cat", shown["response"]["log"]]).stdout
    journal = fleet.exec(HOST, ["journalctl", "-u", "superagent-worker", "--no-pager"]).stdout
    for text in (log, journal, json.dumps(shown)):
        assert CLAUDE_SECRET not in text
    fleet.exec(HOST, ["rm", "-rf", remote])


# A bare repository on the host with one commit on main, the worker user's.
SEED = (
    "set -e; rm -rf {remote} /var/tmp/seed; git init -q --bare -b main {remote}; "
    "git init -q -b main /var/tmp/seed; echo seed > /var/tmp/seed/README.md; "
    "git -C /var/tmp/seed add README.md; "
    "git -C /var/tmp/seed -c user.name=t -c user.email=t@t commit -qm seed; "
    "git -C /var/tmp/seed push -q {remote} main; rm -rf /var/tmp/seed; "
    "chown -R superagent: {remote}"
)


def _shown(fleet: Any, message: int) -> dict[str, Any]:
    done = fleet.exec(
        HOST,
        ["sudo", "-u", "superagent", WORKER_CONTROL, "queue", "show", str(message), "--db",
         WORKER_QUEUE_DB, "--json"],
    )  # fmt: skip
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown
