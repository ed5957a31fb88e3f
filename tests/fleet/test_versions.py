"""Version pins on real hosts: a drifted Node makes the worker refuse work, and the role
refuses a Claude Code release whose engines exclude the pinned Node."""

from __future__ import annotations

import pytest

from tests.fleet.conftest import (
    Provisioning,
    heartbeat,
    unit_property,
    wait_heartbeat,
    worker_check,
)
from tests.fleet.harness import claude_code_tarballs, node_tarball
from tests.fleet.harness.line import fleet_line

pytestmark = pytest.mark.fleet

DRIFTED_NODE = "20.19.5"


def test_a_host_with_another_node_refuses_work(provisioned: Provisioning) -> None:
    fleet, host = provisioned.fleet, "host3"
    tarball, digest = node_tarball(DRIFTED_NODE)
    try:
        # Someone installs another Node on one machine (the nodejs role alone, other pin).
        drift = fleet.playbook(
            limit=host,
            tags="nodejs",
            extra_vars={"nodejs_version": DRIFTED_NODE, "nodejs_controller_tarball": str(tarball),
                        "nodejs_tarball_sha256": digest},
            label="drift",
        )  # fmt: skip
        assert drift.rc == 0, drift.tail()

        code, report = worker_check(fleet, host)
        assert code != 0, report
        assert report["ok"] is False
        assert report["versions"]["node"] == DRIFTED_NODE
        assert f"node is {DRIFTED_NODE}, pinned {fleet_line().node}" in report["problems"], report

        # The check said so in the heartbeat; the running daemon sees Node reinstalled
        # under it and goes on saying so (it used to beat "idle" with its old versions).
        said = heartbeat(fleet, host)
        assert said["status"] == "refusing", said
        beat = wait_heartbeat(fleet, host, ("refusing",), after=said["beat_at"])
        assert beat["versions"]["node"] == DRIFTED_NODE, beat
        assert f"node is {DRIFTED_NODE}, pinned {fleet_line().node}" in (beat["reason"] or "")

        # systemd will not run it either: ExecStartPre is the same check.
        restart = fleet.exec(host, ["systemctl", "restart", "superagent-worker"], check=False)
        assert restart.returncode != 0
        assert unit_property(fleet, host, "ActiveState") != "active"
    finally:
        restore = fleet.playbook(limit=host, label="drift-restore")
    assert restore.rc == 0, restore.tail()
    code, report = worker_check(fleet, host)
    assert code == 0, report
    assert unit_property(fleet, host, "ActiveState") == "active"
    assert wait_heartbeat(fleet, host, ("idle", "busy"))["versions"]["node"] == fleet_line().node


def test_claude_code_refuses_a_release_that_needs_node_22(provisioned: Provisioning) -> None:
    if fleet_line().node.split(".")[0] != "20":
        pytest.skip(f"the fleet runs Node {fleet_line().node}, which Claude Code 2.1.198 accepts")
    fleet, host = provisioned.fleet, "host1"
    run = fleet.playbook(
        limit=host, tags="claude_code", extra_vars={"claude_code_version": "2.1.198"},
        label="engines",
    )  # fmt: skip
    assert run.rc != 0, run.tail()
    assert 'declares engines.node ">=22' in run.output, run.tail()
    assert "need Node 22" in run.output
    assert run.recap[host]["changed"] == 0, run.changed_tasks()
    version = fleet.exec(host, ["/usr/local/bin/claude", "--version"]).stdout
    assert version.split()[0] == fleet_line().claude_code


def test_claude_code_installs_offline_from_tarballs_staged_on_the_controller(
    provisioned: Provisioning,
) -> None:
    fleet, host = provisioned.fleet, "host2"
    tarballs = claude_code_tarballs(fleet_line().claude_code)
    dead_end = "http://127.0.0.1:9"  # any registry access would fail
    try:
        run = fleet.playbook(
            limit=host,
            tags="claude_code_install",
            extra_vars={
                "claude_code_source": "controller_tarball",
                "claude_code_controller_tarballs": [str(t) for t in tarballs],
                # a prefix of its own, so the worker's installation stays as it is
                "claude_code_base_dir": "/opt/offline-test",
                "claude_code_prefix": "/opt/offline-test/claude-code",
                "claude_code_bin_link_dir": "",
                "claude_code_npm_environment": {"npm_config_https_proxy": dead_end,
                                                "npm_config_proxy": dead_end},
            },
            label="claude-code-offline",
        )  # fmt: skip
        assert run.rc == 0, run.tail()
        assert run.recap[host]["changed"] > 0
        version = fleet.exec(host, ["/opt/offline-test/claude-code/bin/claude", "--version"])
        assert version.stdout.split()[0] == fleet_line().claude_code
    finally:
        fleet.exec(
            host, ["sh", "-c", "rm -rf /opt/offline-test /var/cache/superagent/anthropic-ai-*"]
        )
