"""The ssh transport against a real sshd on 127.0.0.1, started by the fixture as root.

Calls go through paramiko to `control queue rpc` running under sshd, into real inboxes;
what arrives is read back with the worker-side Queue, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from control.errors import ConflictError
from control.inventory import Worker
from control.queue import Queue
from control.transport.base import TransportError
from control.transport.ssh import HostKeyError, SshTransport
from tests.injection import big_text, corpus
from tests.sshd import Sshd, keygen, sshd_problem
from tests.support import need


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    problem = sshd_problem()
    need(problem is None, str(problem))
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ~/.ssh/known_hosts of whoever runs the tests must not decide what is known.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


def _inbox(path: Path) -> Path:
    Queue(path).close()
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transport(clock: Clock) -> Iterator[SshTransport]:
    t = SshTransport(connect_timeout_s=10, call_timeout_s=30, clock=clock)
    yield t
    t.close()


@pytest.mark.slow
def test_enqueue_poll_ack_cancel_on_one_connection_per_host(
    sshd: Sshd, transport: SshTransport, tmp_path: Path
) -> None:
    first = sshd.worker("w1", _inbox(tmp_path / "w1.db"))
    second = sshd.worker("w2", _inbox(tmp_path / "w2.db"))
    accepted_before = sshd.accepted()

    sent = transport.enqueue(first, {"task": "one"}, key="run/a/1")
    assert (sent.duplicate, sent.state) == (False, "pending")
    assert transport.enqueue(first, {"task": "one"}, key="run/a/1") == type(sent)(
        sent.id, True, "pending"
    )
    with pytest.raises(ConflictError, match=r"w1: .*different content"):
        transport.enqueue(first, {"task": "other"}, key="run/a/1")
    transport.enqueue(second, {"task": "two"}, key="run/b/1")

    with Queue(tmp_path / "w1.db") as worker_side:
        claimed = worker_side.claim("w1-slot", 60)
        assert claimed is not None and claimed.payload == {"task": "one"}
        worker_side.complete(claimed.id, claimed.fence, {"branch": "phase-a"})
        worker_side.beat("w1-slot", "busy", current=["run/a/1"])

    polled = transport.poll([first, second])
    assert set(polled) == {"w1", "w2"}
    assert all(r.reachable for r in polled.values())
    assert [r["response"] for r in polled["w1"].responses] == [{"branch": "phase-a"}]
    assert polled["w1"].heartbeats[0]["current"] == ["run/a/1"]
    assert polled["w2"].stats["by_state"]["pending"] == 1

    assert transport.ack(first, [claimed.id]) == 1
    assert transport.poll([first])["w1"].responses == []
    assert transport.cancel(second, "run/b/1") == "cancelled"
    assert transport.cancel(second, "run/never/1") == "cancelled"  # a tombstone

    for _ in range(20):
        assert transport.poll([first, second])["w2"].reachable
    # Many calls, one connection per host: the server authenticated exactly two.
    assert transport.connects(first) == transport.connects(second) == 1
    assert sshd.accepted() - accepted_before == 2


@pytest.mark.slow
def test_reconnects_after_the_server_restarts(
    sshd: Sshd, transport: SshTransport, clock: Clock, tmp_path: Path
) -> None:
    worker = sshd.worker("w1", _inbox(tmp_path / "w1.db"))
    transport.enqueue(worker, "before", key="k1")
    assert transport.connects(worker) == 1

    sshd.stop()
    down = transport.poll([worker])["w1"]
    assert not down.reachable
    assert "w1" in str(down.error)
    # Meanwhile the backoff answers at once, without knocking again.
    with pytest.raises(TransportError, match=r"w1: unreachable .*next attempt in"):
        transport.enqueue(worker, "during", key="k2")
    attempts = transport.connects(worker)

    sshd.start()
    clock.now += 60  # past the backoff
    assert transport.enqueue(worker, "after", key="k3").state == "pending"
    assert transport.connects(worker) == attempts + 1
    with Queue(tmp_path / "w1.db") as q:
        assert [m.payload for m in q.messages()] == ["before", "after"]


@pytest.mark.slow
def test_the_next_call_after_a_restart_reconnects_by_itself(
    sshd: Sshd, transport: SshTransport, tmp_path: Path
) -> None:
    worker = sshd.worker("w1", _inbox(tmp_path / "w1.db"))
    transport.enqueue(worker, "one", key="k1")
    sshd.restart()  # no call failed in between: the broken connection is replaced at once
    assert transport.enqueue(worker, "two", key="k2").duplicate is False
    assert transport.connects(worker) == 2


@pytest.mark.slow
def test_a_host_key_that_does_not_match_is_refused(
    sshd: Sshd, transport: SshTransport, tmp_path: Path
) -> None:
    other = keygen(tmp_path / "impostor").split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    db = _inbox(tmp_path / "w1.db")
    worker = sshd.worker("w1", db, superagent_known_hosts=str(known))
    with pytest.raises(HostKeyError, match=r"w1: the host key of \[127.0.0.1\]:\d+ does not match"):
        transport.enqueue(worker, "must not arrive", key="k1")
    polled = transport.poll([worker])["w1"]
    assert not polled.reachable and "does not match" in str(polled.error)
    with Queue(db) as q:
        assert q.messages() == []


@pytest.mark.slow
def test_an_unknown_host_is_refused(sshd: Sshd, transport: SshTransport, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    db = _inbox(tmp_path / "w1.db")
    worker = sshd.worker("w1", db, superagent_known_hosts=str(known))
    with pytest.raises(HostKeyError, match=r"w1: \[127.0.0.1\]:\d+ is not in known_hosts"):
        transport.enqueue(worker, "must not arrive", key="k1")
    with Queue(db) as q:
        assert q.messages() == []


@pytest.mark.slow
def test_known_hosts_from_ssh_common_args(
    sshd: Sshd, transport: SshTransport, tmp_path: Path
) -> None:
    base = sshd.worker("w1", _inbox(tmp_path / "w1.db"))
    values = {k: v for k, v in base.vars.items() if k != "superagent_known_hosts"}
    values["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={sshd.known_hosts}"
    worker = Worker("w1", transport="ssh", vars=values)
    assert transport.enqueue(worker, "x", key="k").state == "pending"


@pytest.mark.slow
def test_a_missing_inbox_is_reported_with_the_workers_words(
    sshd: Sshd, transport: SshTransport, tmp_path: Path
) -> None:
    worker = sshd.worker("w1", tmp_path / "nowhere" / "queue.db")
    with pytest.raises(TransportError, match=r"w1: the remote rpc command ended \(exit 3\)"):
        transport.enqueue(worker, "x", key="k")


@pytest.mark.slow
def test_the_injection_corpus_round_trips_byte_for_byte(
    sshd: Sshd, transport: SshTransport, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    texts = [*corpus(canary), big_text()]
    db = _inbox(tmp_path / "w1.db")
    worker = sshd.worker("w1", db)
    for i, text in enumerate(texts):
        transport.enqueue(worker, {"task": text, "note": [text]}, key=f"run/p{i}/1")
    with Queue(db) as q:
        for text in texts:
            claimed = q.claim("w1-slot", 60)
            assert claimed is not None
            assert claimed.payload == {"task": text, "note": [text]}
            q.complete(claimed.id, claimed.fence, {"echo": text})
    responses = transport.poll([worker], limit=len(texts))["w1"].responses
    assert [r["response"]["echo"] for r in responses] == texts
    assert transport.cancel(worker, texts[0][:500].replace("\n", " ")) == "cancelled"
    assert not canary.exists()
