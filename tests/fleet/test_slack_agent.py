"""The Slack agent under systemd on a real host, installed by its role: hardened, its
tokens given as systemd credentials (not in its environment or command line), READY only
once connected, and answering in Slack through a local Slack on the fleet's bridge."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB, WORKER_VENV
from tests.fakes.services import FakeSlack
from tests.fakes.slack_socket import FakeSocketMode
from tests.fleet.conftest import Provisioning, report, unit_property
from tests.fleet.harness import BRIDGE_ADDRESS, Fleet

pytestmark = pytest.mark.fleet

BOT = "xoxb-fleet-bot-token-5f0c2a9e71"
APP = "xapp-1-fleet-app-token-3b8d4e6f20"
UNIT = "superagent-slack-agent"
INVENTORY = "/etc/superagent/slack-inventory"
AGENT_VENV = "/opt/superagent-slack/venv"  # the role's own virtualenv
SETTINGS = {
    "bot_token_credential": "slack-bot-token",
    "app_token_credential": "slack-app-token",
    "allow": {"read": ["U0READER"]},
}


def ask(socket: FakeSocketMode, slack: FakeSlack, text: str) -> str:
    ts = f"{1_900_000_000 + time.monotonic_ns() % 10**6}.000100"
    before = len(slack.posts)
    slack.people_said.add(ts)
    socket.send_event(
        {"type": "app_mention", "user": "U0READER", "text": text, "ts": ts,
         "channel": "C0TEST", "channel_type": "channel", "event_ts": ts}
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(slack.posts) <= before:
        assert time.monotonic() < deadline, f"no answer to {text!r}"
        time.sleep(0.1)
    reply = slack.posts[before]
    assert reply["thread_ts"] == ts
    return str(reply["text"])


def journal(fleet: Fleet) -> str:
    return fleet.exec(
        "host1", ["journalctl", "-u", UNIT, "--no-pager", "-n", "60"], check=False
    ).stdout


def agent_inventory(fleet: Fleet, slack: FakeSlack) -> None:
    """What `control slack` on host1 reads: the settings, and host1's own inbox as a
    local worker."""
    document = {
        "all": {
            "vars": {"superagent_slack_agent": {**SETTINGS, "base_url": slack.url + "/api/"}},
            "children": {
                "workers": {
                    "hosts": {
                        "host1": {
                            "superagent_transport": "local",
                            "superagent_queue_db": WORKER_QUEUE_DB,
                        }
                    }
                }
            },
        }
    }
    fleet.exec("host1", ["mkdir", "-p", INVENTORY])
    fleet.exec("host1", ["tee", f"{INVENTORY}/hosts.yml"], input=yaml.safe_dump(document))


def test_the_slack_agent_role_refuses_a_superagent_without_its_orchestrator_extra(
    provisioned: Provisioning, tmp_path: Path
) -> None:
    """Workers install superagent without the orchestrator's extra (Slack, Apprise, the
    transports): told to run the worker's virtualenv instead of installing its own, the
    role says so before it writes anything, naming what to do."""
    fleet = provisioned.fleet
    playbook = tmp_path / "slack-agent.yml"
    playbook.write_text(
        "- name: The Slack agent on host1\n  hosts: host1\n  become: true\n"
        "  gather_facts: false\n  roles: [slack_agent]\n"
    )
    fleet.exec("host1", ["mkdir", "-p", INVENTORY])
    fleet.set_host_vars(
        "host1", superagent_slack_agent=SETTINGS, slack_agent_bot_token=BOT,
        slack_agent_app_token=APP, slack_agent_inventory=INVENTORY,
        slack_agent_install=False, slack_agent_control=WORKER_CONTROL,
    )  # fmt: skip
    try:
        refused = fleet.playbook(str(playbook), limit="host1", label="slack-agent-no-extra")
        assert refused.rc != 0, refused.tail()
        assert "without its orchestrator extra" in refused.output, refused.tail()
        assert "superagent[orchestrator]" in refused.output
        assert BOT not in refused.output and APP not in refused.output
        assert refused.recap["host1"]["changed"] == 0, refused.changed_tasks()
        listed = fleet.exec("host1", ["ls", "/etc/systemd/system"]).stdout
        assert f"{UNIT}.service" not in listed
        assert fleet.exec("host1", ["test", "-e", AGENT_VENV], check=False).returncode != 0
    finally:
        fleet.exec("host1", ["rm", "-rf", INVENTORY], check=False)
        fleet.set_host_vars(
            "host1", superagent_slack_agent=None, slack_agent_bot_token=None,
            slack_agent_app_token=None, slack_agent_inventory=None,
            slack_agent_install=None, slack_agent_control=None,
        )  # fmt: skip


def test_the_slack_agent_role_runs_it_hardened_with_its_tokens_as_credentials(
    provisioned: Provisioning, tmp_path: Path
) -> None:
    """On a worker host (its virtualenv has no orchestrator extra), the role installs
    superagent[orchestrator] into a virtualenv of its own from the controller's wheels,
    offline, and runs the agent from it; the worker's virtualenv is left as it was."""
    fleet = provisioned.fleet
    socket = FakeSocketMode(host=BRIDGE_ADDRESS)
    slack = FakeSlack(BOT, "C0TEST", "/x", app_token=APP, socket=socket, host=BRIDGE_ADDRESS)
    playbook = tmp_path / "slack-agent.yml"
    playbook.write_text(
        "- name: The Slack agent on host1\n  hosts: host1\n  become: true\n"
        "  gather_facts: false\n  roles: [slack_agent]\n"
    )
    agent_inventory(fleet, slack)
    fleet.set_host_vars(
        "host1", superagent_slack_agent=SETTINGS, slack_agent_bot_token=BOT,
        slack_agent_app_token=APP, slack_agent_inventory=INVENTORY,
        # `health` polls host1's inbox (SQLite writes beside it even to read).
        slack_agent_writable_paths=[str(Path(WORKER_QUEUE_DB).parent)],
    )  # fmt: skip
    try:
        first = fleet.playbook(str(playbook), limit="host1", label="slack-agent")
        assert first.rc == 0, first.tail() + journal(fleet)
        assert "xoxb-" not in first.output and "xapp-" not in first.output  # no_log
        # Type=notify: started means connected to Slack.
        assert socket.connections
        # superagent[orchestrator] in the role's own virtualenv; the worker's untouched.
        exec_start = unit_property(fleet, "host1", "ExecStart", UNIT)
        assert f"path={AGENT_VENV}/bin/control " in exec_start, exec_start
        modules = ("slack_bolt", "apprise", "ansible")
        probe = f"import importlib.util as u; print([m for m in {modules!r} if u.find_spec(m)])"
        agent_has = fleet.exec("host1", [f"{AGENT_VENV}/bin/python", "-c", probe]).stdout
        assert agent_has.strip() == "['slack_bolt', 'apprise', 'ansible']"
        worker_has = fleet.exec("host1", [f"{WORKER_VENV}/bin/python", "-c", probe]).stdout
        assert worker_has.strip() == "[]"
        assert unit_property(fleet, "host1", "ActiveState", UNIT) == "active"
        # Its first delivery was recorded (Slack's retries), so the state database exists.
        assert ask(socket, slack, "<@U0BOT> status") == "no run yet"
        assert ask(socket, slack, "<@U0BOT> health") == "healthy\nhost1: ok"

        # The tokens: files only root reads, given to the unit as credentials; nowhere
        # in the agent's command line or environment, nor readable by its user.
        pid = unit_property(fleet, "host1", "MainPID", UNIT)
        for what in ("cmdline", "environ"):
            seen = fleet.exec("host1", ["cat", f"/proc/{pid}/{what}"]).stdout
            assert BOT not in seen and APP not in seen, what
        listing = fleet.exec("host1", ["stat", "-c", "%a %U", "/etc/superagent/slack",
                                       "/etc/superagent/slack/slack-bot-token"]).stdout  # fmt: skip
        assert listing.split("\n")[:2] == ["700 root", "600 root"]
        token_file = "/etc/superagent/slack/slack-bot-token"
        read = fleet.exec("host1", ["sudo", "-u", "superagent", "cat", token_file], check=False)
        assert read.returncode != 0
        unit = fleet.exec("host1", ["cat", f"/etc/systemd/system/{UNIT}.service"]).stdout
        assert BOT not in unit and "LoadCredential=slack-bot-token:" in unit
        for prop, value in {
            "User": "superagent", "Type": "notify", "NoNewPrivileges": "yes",
            "ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes",
            "RestrictNamespaces": "yes", "CapabilityBoundingSet": "",
        }.items():  # fmt: skip
            assert unit_property(fleet, "host1", prop, UNIT) == value, prop
        analysis = fleet.exec(
            "host1", ["systemd-analyze", "security", f"{UNIT}.service", "--no-pager"]
        ).stdout
        match = re.search(rf"Overall exposure level for {UNIT}.service: ([0-9.]+)", analysis)
        assert match, analysis[-500:]
        report("slack_agent_exposure", float(match.group(1)))
        assert float(match.group(1)) <= 2.5, analysis[-3000:]

        again = fleet.playbook(str(playbook), limit="host1", label="slack-agent-rerun")
        assert again.rc == 0, again.tail() + journal(fleet)
        assert again.recap["host1"]["changed"] == 0, again.changed_tasks()

        # A token Slack refuses: the start fails (no READY), the role says so.
        slack.app_token = "xapp-1-another-one"
        fleet.exec("host1", ["systemctl", "restart", UNIT], check=False)
        assert unit_property(fleet, "host1", "ActiveState", UNIT) != "active"
    finally:
        fleet.exec("host1", ["systemctl", "disable", "--now", UNIT], check=False)
        fleet.exec("host1", ["rm", "-rf", f"/etc/systemd/system/{UNIT}.service",
                             "/etc/superagent/slack", INVENTORY, "/opt/superagent-slack",
                             "/var/lib/superagent/orchestrator"], check=False)  # fmt: skip
        fleet.exec("host1", ["systemctl", "daemon-reload"], check=False)
        fleet.set_host_vars(
            "host1", superagent_slack_agent=None, slack_agent_bot_token=None,
            slack_agent_app_token=None, slack_agent_inventory=None,
            slack_agent_writable_paths=None,
        )  # fmt: skip
        socket.stop()
        slack.down()
