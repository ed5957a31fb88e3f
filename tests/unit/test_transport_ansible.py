"""The ansible transport's pieces that need no Ansible run: the `!unsafe` extra vars,
the environment every run gets, names and paths checked before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from control.errors import UsageError
from control.inventory import Worker
from control.transport.ansible import AnsibleTransport, _answer
from control.transport.runner import AdHocRunner, HostOutcome, Unsafe, _Dumper, unsafe
from tests.injection import corpus


def test_every_string_of_the_data_is_marked_unsafe() -> None:
    marked = unsafe({"argv": {"h1": ["/a", "b"]}, "stdin": "x", "n": 3, "t": ("y",)})
    assert isinstance(marked["stdin"], Unsafe)
    assert all(isinstance(a, Unsafe) for a in marked["argv"]["h1"])
    assert isinstance(marked["t"][0], Unsafe)
    assert marked["n"] == 3


def test_ansible_never_evaluates_the_unsafe_data(tmp_path: Path) -> None:
    # The request travels base64-encoded; this shows the second lock holds on its own:
    # even raw Jinja in the extra vars comes out of Ansible's templating verbatim.
    import yaml  # noqa: PLC0415
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415

    try:
        from ansible.template import trust_as_template  # noqa: PLC0415  ansible-core 2.19+
    except ImportError:  # before 2.19 every string is a template

        def trust_as_template(text: str) -> str:
            return text

    canary = tmp_path / "canary"
    texts = corpus(canary)
    path = tmp_path / "extravars.yml"
    path.write_text(yaml.dump(unsafe({"texts": texts}), Dumper=_Dumper, allow_unicode=True))
    loader = DataLoader()
    variables = loader.load_from_file(str(path))
    rendered = Templar(loader=loader, variables=variables).template(
        trust_as_template("{{ texts }}")
    )
    assert [str(t) for t in rendered] == texts
    loop = next(t for t in texts if t.startswith("{% for"))
    # The same text, were it not marked, would be evaluated (a harmless item shows it).
    assert Templar(loader=loader, variables={}).template(trust_as_template(loop)) == "012"
    assert not canary.exists()


def test_host_key_checking_cannot_be_switched_off() -> None:
    runner = AdHocRunner(envvars={"ANSIBLE_HOST_KEY_CHECKING": "False", "X": "1"})
    env = runner.envvars()
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["X"] == "1"


def test_a_bad_host_name_is_refused_before_anything_runs(tmp_path: Path) -> None:
    runner = AdHocRunner(control_path_dir=tmp_path / "cp")
    with pytest.raises(UsageError, match="cannot start with '-'"):
        runner.run(inventory=tmp_path, hosts=["-oProxyCommand=x"], module="ping", args={})
    assert runner.calls == 0


def test_a_worker_with_a_bad_path_is_reported_without_running(tmp_path: Path) -> None:
    runner = AdHocRunner(control_path_dir=tmp_path / "cp")
    transport = AnsibleTransport(tmp_path, runner=runner)
    worker = Worker("w1", transport="ansible", vars={"superagent_queue_db": "queue.db"})
    polled = transport.poll([worker])["w1"]
    assert not polled.reachable
    assert "superagent_queue_db must be an absolute path" in str(polled.error)
    assert runner.calls == 0


@pytest.mark.parametrize(
    ("outcome", "result", "expected"),
    [
        ("ok", {"answer": '{"ok": true, "acked": 1}'}, {"ok": True, "acked": 1}),
        ("ok", {"answer": "Traceback..."}, "not a protocol answer: 'Traceback...'"),
        ("ok", {}, "the result has no answer (did ansible-runner drop it for its size?)"),
        (
            "failed",
            {"rc": 3, "stderr": "error: /q.db: no inbox here"},
            "failed: exit 3; error: /q.db: no inbox here",
        ),
        ("unreachable", {"msg": "ssh: connect: refused"}, "unreachable: ssh: connect: refused"),
    ],
)
def test_each_host_outcome_becomes_an_answer_or_a_reason(
    outcome: Any, result: dict[str, Any], expected: Any
) -> None:
    assert _answer(HostOutcome("w1", outcome, result)) == expected
