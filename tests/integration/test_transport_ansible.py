"""The ansible transport through real ansible-runner calls to `ansible_connection: local` hosts.

Each host has its own inbox; a poll of all of them (and of a host nothing answers
for) must be one ansible-runner invocation. Ansible costs seconds per call, so the
tests make few calls and carry many payloads in each.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
import yaml

from control.inventory import Worker, load_inventory
from control.queue import Queue
from control.transport.ansible import AnsibleTransport
from control.transport.base import TransportError
from control.transport.runner import AdHocRunner
from control.transport.ssh import SshTransport
from tests.injection import big_text, corpus
from tests.sshd import Sshd, free_port, keygen, sshd_problem
from tests.support import need

CONTROL = Path(sys.executable).parent / "control"
HOSTS = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def control_path_dir() -> Iterator[Path]:
    # Short on purpose: ssh's control socket path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="sa-cp-"))
    yield path
    for leftover in path.iterdir():
        leftover.unlink()
    path.rmdir()


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """An inventory directory: three local hosts, each with its own inbox, and one that
    nothing answers for (ssh to a closed port on this machine)."""
    hosts: dict[str, Any] = {
        name: {"superagent_queue_db": str(tmp_path / f"{name}.db")} for name in HOSTS
    }
    for name in HOSTS:
        Queue(tmp_path / f"{name}.db").close()
    hosts["gone"] = {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": free_port(),
        "superagent_queue_db": str(tmp_path / "gone.db"),
    }
    inventory = {
        "workers": {
            "hosts": hosts,
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "superagent_control": str(CONTROL),
                "superagent_transport": "ansible",
            },
        }
    }
    root = tmp_path / "inventory"
    root.mkdir()
    (root / "hosts.yml").write_text(yaml.safe_dump(inventory))
    return root


@pytest.fixture
def invocations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ansible-runner invocation, as ansible-runner itself sees it."""
    seen: list[dict[str, Any]] = []
    real: Callable[..., Any] = ansible_runner.run

    def counting(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(ansible_runner, "run", counting)
    return seen


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the runner's private data dirs go, to check that none is left behind."""
    path = tmp_path / "runner-tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.mark.slow
def test_enqueue_poll_ack_cancel_with_one_runner_call_per_poll(
    fleet: Path,
    control_path_dir: Path,
    invocations: list[dict[str, Any]],
    private_tmp: Path,
    tmp_path: Path,
) -> None:
    workers = {w.name: w for w in load_inventory(fleet)}
    transport = AnsibleTransport(fleet, runner=AdHocRunner(control_path_dir=control_path_dir))
    canary = tmp_path / "canary"
    payload = {"task": "one", "jinja": "{{ lookup('pipe','touch " + str(canary) + "') }}"}

    sent = transport.enqueue(workers["h1"], payload, key="run/a/1")
    assert (sent.duplicate, sent.state) == (False, "pending")
    with Queue(tmp_path / "h1.db") as worker_side:
        claimed = worker_side.claim("h1-slot", 60)
        assert claimed is not None and claimed.payload == payload  # stored verbatim
        worker_side.complete(claimed.id, claimed.fence, {"branch": "phase-a"})
        worker_side.beat("h1-slot", "idle")

    before = len(invocations)
    polled = transport.poll(list(workers.values()))
    assert len(invocations) - before == 1  # one invocation for the four hosts
    assert sorted(invocations[-1]["host_pattern"].split(",")) == ["gone", *HOSTS]
    assert set(polled) == {*HOSTS, "gone"}
    assert all(polled[name].reachable for name in HOSTS), polled
    assert [r["response"] for r in polled["h1"].responses] == [{"branch": "phase-a"}]
    assert polled["h1"].heartbeats[0]["worker_id"] == "h1-slot"
    assert polled["h2"].stats["by_state"]["pending"] == 0
    assert not polled["gone"].reachable
    assert str(polled["gone"].error).startswith("gone: unreachable")

    assert transport.ack(workers["h1"], [claimed.id]) == 1
    assert transport.cancel(workers["h2"], "run/b/1") == "cancelled"
    assert transport.runner.calls == len(invocations) == 4
    # Pipelining and the fixed control path reached Ansible; host keys stay checked.
    env = invocations[-1]["envvars"]
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(control_path_dir)
    assert "ControlPersist" in env["ANSIBLE_SSH_ARGS"]
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert invocations[-1]["quiet"] is True and invocations[-1]["suppress_env_files"] is True
    assert list(private_tmp.iterdir()) == []  # every private data dir was removed
    assert not canary.exists()


@pytest.mark.slow
def test_unreachable_host_fails_the_call_with_its_name(fleet: Path, control_path_dir: Path) -> None:
    gone = next(w for w in load_inventory(fleet) if w.name == "gone")
    transport = AnsibleTransport(fleet, runner=AdHocRunner(control_path_dir=control_path_dir))
    with pytest.raises(TransportError, match=r"^gone: unreachable: .*127\.0\.0\.1"):
        transport.enqueue(gone, "x", key="k")


@pytest.mark.slow
def test_the_injection_corpus_round_trips_without_an_inventory_dir(
    control_path_dir: Path, private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No inventory directory: the transport writes one from the worker's own variables.
    monkeypatch.delenv("SUPERAGENT_INVENTORY", raising=False)
    db = tmp_path / "w1.db"
    Queue(db).close()
    worker = Worker(
        "w1",
        transport="ansible",
        vars={
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "superagent_control": str(CONTROL),
            "superagent_queue_db": str(db),
        },
    )
    transport = AnsibleTransport(runner=AdHocRunner(control_path_dir=control_path_dir))
    canary = tmp_path / "canary"
    texts = corpus(canary)
    payload = {"corpus": texts, "big": big_text(), "keys": {t: i for i, t in enumerate(texts)}}

    transport.enqueue(worker, payload, key="run/injection/1")
    with Queue(db) as worker_side:
        claimed = worker_side.claim("w1-slot", 60)
        assert claimed is not None
        assert claimed.payload == payload
        worker_side.complete(claimed.id, claimed.fence, {"echo": texts})
    polled = transport.poll([worker])["w1"]
    assert polled.reachable, polled.error
    assert polled.responses[0]["response"] == {"echo": texts}
    assert transport.runner.calls == 2
    assert list(private_tmp.iterdir()) == []
    assert not canary.exists()


@pytest.mark.slow
def test_over_real_ssh_host_keys_are_checked(
    control_path_dir: Path, tmp_path: Path, invocations: list[dict[str, Any]]
) -> None:
    problem = sshd_problem()
    need(problem is None, str(problem))
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    try:
        impostor = keygen(tmp_path / "impostor").split()
        wrong = tmp_path / "wrong_known_hosts"
        wrong.write_text(f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n")
        workers = []
        for name, known in (("good", sshd.known_hosts), ("impostor", wrong)):
            db = tmp_path / f"{name}.db"
            Queue(db).close()
            values = dict(sshd.worker(name, db).vars)
            del values["superagent_known_hosts"]
            values["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={known}"
            values["ansible_python_interpreter"] = sys.executable
            workers.append(Worker(name, transport="ansible", vars=values))
        transport = AnsibleTransport(runner=AdHocRunner(control_path_dir=control_path_dir))

        polled = transport.poll(workers)
        assert len(invocations) == 1
        assert polled["good"].reachable, polled["good"].error
        assert not polled["impostor"].reachable
        assert "Host key verification failed" in str(polled["impostor"].error)
        assert transport.enqueue(workers[0], "{{ 7 * 7 }}", key="k").state == "pending"
        with Queue(tmp_path / "good.db") as q:
            assert [m.payload for m in q.messages()] == ["{{ 7 * 7 }}"]
        with Queue(tmp_path / "impostor.db") as q:
            assert q.messages() == []
    finally:
        sshd.stop()


@pytest.mark.slow
def test_a_worker_behind_nat_is_reached_through_its_tunnel_by_both_transports(
    control_path_dir: Path, tmp_path: Path, invocations: list[dict[str, Any]]
) -> None:
    """ansible_host/ansible_port name its LAN (here a closed port: no route from the
    orchestrator); reverse_tunnel_port is where its tunnel ends (here the real sshd). A
    poll of it with a direct worker is one ansible-runner call, each host reached where
    it must be, also with a direct worker that spells its port ansible_ssh_port (which
    the tunnel's extra vars hide, and Ansible prefers to its ansible_port)."""
    problem = sshd_problem()
    need(problem is None, str(problem))
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    try:
        workers = []
        for name, reach in (("direct", "direct"), ("nat", "reverse-tunnel"), ("old", "direct")):
            db = tmp_path / f"{name}.db"
            Queue(db).close()
            values = dict(sshd.worker(name, db).vars)
            values["ansible_python_interpreter"] = sys.executable
            values["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={sshd.known_hosts}"
            if reach == "reverse-tunnel":
                values.update(ansible_port=free_port(), reverse_tunnel_port=sshd.port)
            if name == "old":
                values.update(ansible_port=free_port(), ansible_ssh_port=sshd.port)
            workers.append(Worker(name, transport="ansible", reach=reach, vars=values))
        transport = AnsibleTransport(runner=AdHocRunner(control_path_dir=control_path_dir))

        polled = transport.poll(workers[:2])
        assert polled["nat"].reachable, polled["nat"].error
        assert polled["direct"].reachable, polled["direct"].error
        assert len(invocations) == 1  # the mixed poll is one call
        assert sorted(invocations[0]["host_pattern"].split(",")) == ["direct", "nat"]

        polled = transport.poll(workers)
        assert all(polled[w.name].reachable for w in workers), polled
        assert [i["host_pattern"] for i in invocations[1:]] == ["direct,nat,old"]  # one call

        assert transport.enqueue(workers[1], {"task": "through the tunnel"}, key="k").state == (
            "pending"
        )
        ssh = SshTransport(connect_timeout_s=10, call_timeout_s=30)
        try:
            over_ssh = ssh.poll([workers[1]])["nat"]
        finally:
            ssh.close()
        assert over_ssh.reachable, over_ssh.error
        assert over_ssh.stats["by_state"].get("pending") == 1
        with Queue(tmp_path / "nat.db") as q:
            assert [m.payload for m in q.messages()] == [{"task": "through the tunnel"}]
    finally:
        sshd.stop()
