"""Host keys are checked: a host whose SSH key changed is refused, not silently re-trusted."""

from __future__ import annotations

import pytest

from tests.fleet.conftest import Provisioning

pytestmark = pytest.mark.fleet

KEY = "/etc/ssh/ssh_host_ed25519_key"


def test_a_host_whose_key_changed_is_refused(provisioned: Provisioning) -> None:
    fleet, host = provisioned.fleet, "host2"
    old_private = fleet.exec(host, ["cat", KEY]).stdout
    old_public = fleet.exec(host, ["cat", f"{KEY}.pub"]).stdout
    known_before = fleet.known_hosts.read_text()
    try:
        # The machine comes back with another key (reinstalled, or someone in the middle).
        fleet.exec(host, ["rm", "-f", KEY, f"{KEY}.pub"])
        fleet.exec(host, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", KEY])
        fleet.exec(host, ["systemctl", "restart", "ssh"])
        fleet.close_ssh_masters()  # an open master connection would hide the change

        direct = fleet.ssh(host, "true", check=False)
        assert direct.returncode == 255
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in direct.stderr

        keys = fleet.playbook("playbooks/known_hosts.yml", limit=host, label="changed-key")
        assert keys.rc != 0
        assert "differs from the one in" in keys.output, keys.tail()

        # Past the known_hosts play, Ansible's own SSH refuses the host too.
        site = fleet.playbook(limit=host, tags="worker_run", label="changed-key-site")
        assert site.rc != 0
        assert site.recap[host]["unreachable"] == 1, site.tail()
        assert "Host key verification failed" in site.output

        assert fleet.known_hosts.read_text() == known_before, "the changed key was recorded"
    finally:
        fleet.exec(host, ["tee", KEY], input=old_private)
        fleet.exec(host, ["tee", f"{KEY}.pub"], input=old_public)
        fleet.exec(host, ["chmod", "600", KEY])
        fleet.exec(host, ["systemctl", "restart", "ssh"])
        fleet.close_ssh_masters()
    assert fleet.ssh(host, "hostname").stdout.strip() == host
