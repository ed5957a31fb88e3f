"""The escape corpus (tests/escape.py) on every fleet host: a hostile agent, its verify
commands and delivered files against the real worker unit (user `superagent`, the
hardened systemd unit, bubblewrap inside a systemd-nspawn host), phases sent over the
ssh transport. Every attempt is blocked or detected; no canary, secret or process is
left on the host, and the worker serves on."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control.git import workspace_root
from control.inventory import load_inventory
from control.messages import PhaseTask
from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from control.transport import Transports
from tests.escape import FACTS_SCRIPT, AttemptOutcome, Target, Verdict, play, summary
from tests.fleet.conftest import report
from tests.fleet.harness import Fleet
from tests.fleet.test_dispatch import GitServer, ready, use_transport

pytestmark = pytest.mark.fleet
__all__ = ["ready"]  # the module fixture: hosts up, a git server on the bridge

HOME = Path("/var/lib/superagent")
CREDENTIALS = Path("/run/credentials/superagent-worker.service/agent-credentials")


def _setup(fleet: Fleet, server: GitServer, host: str, tmp: Path) -> Target:
    seed = tmp / f"seed-{host}"
    seed.mkdir()
    (seed / "README.md").write_text("# escape corpus\n")
    url = server.new_remote(f"escape-{host}", seed)
    root = Path(f"/var/tmp/escape-{secrets.token_hex(4)}")
    work = HOME / "work"
    shared = workspace_root(work, url)
    key_line = f"PUSHKEY{secrets.token_hex(16)}"
    script = (
        f"set -e; mkdir -p {root}/canary; chmod 777 {root} {root}/canary; "
        f"install -d -o superagent -g superagent -m 700 {HOME}/.ssh {shared}/slots/slot9; "
        f"printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\\n{key_line}\\n' "
        f"> {HOME}/.ssh/id_ed25519; "
        f"chown superagent: {HOME}/.ssh/id_ed25519; chmod 600 {HOME}/.ssh/id_ed25519; "
        f"echo OTHER-SLOT-SECRET > {shared}/slots/slot9/secret.txt; "
        f"chown -R superagent: {shared}"
    )
    fleet.exec(host, ["bash", "-c", script])
    assert fleet.api_key
    return Target(
        root=root, remote=server.root / f"escape-{host}.git", home=HOME, canary=root / "canary",
        api_key=fleet.api_key, credential_file=CREDENTIALS, work_dir=work,
        queue_db=Path(WORKER_QUEUE_DB), logs_dir=Path("/var/log/superagent"),
        shared_clone=shared / "repo", other_slot=shared / "slots" / "slot9", repo_url=url,
        push_key_text=key_line,
    )  # fmt: skip


def _main_pid(fleet: Fleet, host: str) -> int:
    done = fleet.exec(host, ["systemctl", "show", "superagent-worker", "-p", "MainPID", "--value"])
    return int(done.stdout.strip() or 0)


def _show(fleet: Fleet, host: str, message_id: int) -> dict[str, Any]:
    done = fleet.exec(
        host,
        ["sudo", "-u", "superagent", WORKER_CONTROL, "queue", "show", str(message_id),
         "--db", WORKER_QUEUE_DB, "--json"],
    )  # fmt: skip
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@pytest.fixture
def transports(ready: tuple[Fleet, GitServer]) -> Iterator[Transports]:
    fleet, _ = ready
    use_transport(fleet, "ssh")
    opened = Transports(inventory=fleet.inventory_dir)
    try:
        yield opened
    finally:
        opened.close()


def test_no_attempt_escapes_on_any_fleet_host(
    ready: tuple[Fleet, GitServer], transports: Transports, tmp_path: Path
) -> None:
    fleet, server = ready
    workers = {w.name: w for w in load_inventory(fleet.inventory_dir)}
    results: dict[str, list[Verdict]] = {}
    for host in ("host1", "host2", "host3"):
        target = _setup(fleet, server, host, tmp_path)

        def submit(task: PhaseTask, host: str = host) -> AttemptOutcome:
            sent = transports.enqueue(workers[host], task.to_payload(), key=task.key,
                                      max_attempts=1)  # fmt: skip
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                shown = _show(fleet, host, sent.id)
                if shown["state"] in ("done", "failed", "dead", "cancelled"):
                    return AttemptOutcome(shown["state"], shown.get("reason") or "",
                                   shown.get("response") or {})  # fmt: skip
                time.sleep(0.5)
            raise TimeoutError(f"{task.key} did not finish on {host}")

        def worker_pid(host: str = host) -> int:
            deadline = time.monotonic() + 90  # a killed worker comes back after RestartSec
            while (pid := _main_pid(fleet, host)) == 0 and time.monotonic() < deadline:
                time.sleep(1)
            return pid

        def facts(query: dict[str, Any], host: str = host) -> dict[str, Any]:
            done = fleet.exec(host, ["python3", "-c", FACTS_SCRIPT], input=json.dumps(query))
            found: dict[str, Any] = json.loads(done.stdout)
            return found

        try:
            results[host] = play(
                target, submit, facts=facts, worker_pid=worker_pid,
                alive=lambda pid, host=host: _main_pid(fleet, host) == pid,  # type: ignore[misc]
            )  # fmt: skip
        finally:
            fleet.exec(host, ["bash", "-c", f"rm -rf {target.root} {HOME}/.ssh/id_ed25519 "
                              f"{target.other_slot}; pkill -9 -f superagent-escape-marker; true"],
                       check=False)  # fmt: skip
    escaped = {
        host: [f"{v.name}: {v.detail}" for v in verdicts if v.outcome == "escaped"]
        for host, verdicts in results.items()
    }
    for host, verdicts in results.items():
        report(f"escape_{host}", summary(verdicts))
    assert escaped == {"host1": [], "host2": [], "host3": []}
    for verdicts in results.values():
        by_name = {v.name: v for v in verdicts}
        assert by_name["commit the API key in a file"].outcome == "detected"
