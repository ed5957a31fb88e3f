"""The ssh transport's pieces that need no server: targets from inventory variables,
the remote command's quoting, the reject policy, and the backoff after failures."""

from __future__ import annotations

import shlex
from typing import Any

import paramiko
import pytest

from control.errors import UsageError
from control.inventory import Worker
from control.transport.base import TransportError
from control.transport.ssh import SshTarget, SshTransport, known_hosts_files


def _worker(**values: Any) -> Worker:
    base = {"superagent_queue_db": "/var/lib/superagent/queue.db"}
    return Worker("w1", transport="ssh", vars={**base, **values})


def test_target_from_inventory_variables() -> None:
    target = SshTarget.of(
        _worker(
            ansible_host="10.77.0.11",
            ansible_port="2222",
            ansible_user="agent",
            ansible_ssh_private_key_file="~/keys/fleet",
            superagent_control="/srv/superagent/venv/bin/control",
        )
    )
    assert (target.host, target.port, target.user) == ("10.77.0.11", 2222, "agent")
    assert target.key_file is not None and target.key_file.endswith("/keys/fleet")
    assert not target.key_file.startswith("~")
    assert target.address == "[10.77.0.11]:2222"
    assert target.command == (
        "/srv/superagent/venv/bin/control queue rpc --db /var/lib/superagent/queue.db"
    )


def test_a_worker_behind_nat_is_reached_at_its_tunnel_whatever_its_lan_address() -> None:
    values = {"ansible_host": "192.168.1.20", "ansible_port": 22, "reverse_tunnel_port": 2201}
    worker = Worker("w1", transport="ssh", reach="reverse-tunnel", vars=values)
    target = SshTarget.of(worker)
    assert (target.host, target.port, target.address) == ("127.0.0.1", 2201, "[127.0.0.1]:2201")


def test_the_remote_command_quotes_every_path() -> None:
    odd = "/srv/it's a $(dir)/`x`;|&/queue.db"
    target = SshTarget.of(_worker(superagent_queue_db=odd))
    assert shlex.split(target.command)[-1] == odd
    assert target.command.endswith(shlex.quote(odd))


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("superagent_control", "control"),
        ("superagent_queue_db", "queue.db"),
        ("superagent_queue_db", "/a\n/b"),
    ],
)
def test_paths_must_be_absolute(var: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"w1: {var} must be an absolute path"):
        SshTarget.of(_worker(**{var: value}))


def test_a_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(UsageError, match="w1: ansible_port must be a number, not 'ssh'"):
        SshTarget.of(_worker(ansible_port="ssh"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"superagent_known_hosts": "/etc/fleet/known_hosts"}, ("/etc/fleet/known_hosts",)),
        ({"superagent_known_hosts": ["/a", "/b"]}, ("/a", "/b")),
        ({"ansible_ssh_common_args": "-o UserKnownHostsFile=/f/kh -o X=y"}, ("/f/kh",)),
        ({"ansible_ssh_common_args": "-oUserKnownHostsFile=/f/kh"}, ("/f/kh",)),
        ({"ansible_ssh_extra_args": "-o 'UserKnownHostsFile /a /b'"}, ("/a", "/b")),
        ({"ansible_ssh_common_args": "-o ProxyJump=bastion"}, ()),
        ({}, ()),
    ],
)
def test_known_hosts_files_named_by_the_inventory(
    values: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert known_hosts_files(_worker(**values)) == expected


class _Refusing:
    """An SSHClient whose server never answers; records what it was told."""

    made: list[_Refusing] = []  # noqa: RUF012

    def __init__(self) -> None:
        self.policy: Any = None
        self.connected = 0
        _Refusing.made.append(self)

    def load_system_host_keys(self, filename: str | None = None) -> None:
        pass

    def set_missing_host_key_policy(self, policy: Any) -> None:
        self.policy = policy

    def connect(self, *args: Any, **kwargs: Any) -> None:
        self.connected += 1
        raise ConnectionRefusedError(111, "Connection refused")

    def close(self) -> None:
        pass


def test_backoff_after_failures_grows_and_is_bounded() -> None:
    now = [0.0]
    _Refusing.made.clear()
    transport = SshTransport(
        backoff_s=(1.0, 4.0),
        clock=lambda: now[0],
        client_factory=_Refusing,  # type: ignore[arg-type]
    )
    worker = _worker()
    waits = []
    for _ in range(5):
        with pytest.raises(TransportError, match=r"w1: cannot connect to w1: .*refused"):
            transport.enqueue(worker, "x", key="k")
        # Until the wait is over, calls fail at once without connecting.
        with pytest.raises(TransportError, match=r"w1: unreachable \(.*\); next attempt in"):
            transport.enqueue(worker, "x", key="k")
        link_wait = transport._links["w1"].next_attempt - now[0]
        waits.append(link_wait)
        now[0] += link_wait
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(_Refusing.made) == 5  # one connection attempt per wait, no more
    assert all(isinstance(c.policy, paramiko.RejectPolicy) for c in _Refusing.made)
    polled = transport.poll([worker])["w1"]
    assert not polled.reachable and "w1" in str(polled.error)
    transport.close()
