"""Provisioning figures on the real test fleet: three fresh hosts, then an idempotent rerun,
then a rolling upgrade of the three to the Node 22 line under a run.

Boots three fresh hosts (bench1..bench3, next to any test fleet already up), times
playbooks/site.yml on them twice, the transports, and `control upgrade` while a run of
sleeping phases goes on (only when no other host shares the inventory: the upgrade takes
every host), and removes them. Needs root and the fleet's packages (tests/setup-system.sh).
The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fleet harness lives in tests/
from control.demo import EXAMPLES
from control.inventory import load_inventory
from control.pins import CLAUDE_CODE_VERSION, NODE_VERSION, WORKER_CONTROL, WORKER_QUEUE_DB
from control.transport import Transports
from tests.fleet.harness import (
    REPO,
    Fleet,
    build_wheels,
    missing_requirements,
    node_tarball,
    session_lock,
)
from tests.fleet.runs import Watch, done_once, node22_vars, sleepy_spec, upgrade
from tests.fleet.test_dispatch import GitServer, dispatch

HOSTS = ("bench1", "bench2", "bench3")
CONTROL = WORKER_CONTROL
INBOX = WORKER_QUEUE_DB


def main() -> int:
    problems = missing_requirements()
    if problems:
        print(f"bench-fleet: cannot run here: {'; '.join(problems)}", file=sys.stderr)
        return 2
    with session_lock():
        return _bench()


def _bench() -> int:
    fleet = Fleet()
    was_up = bool(fleet.hosts)
    build_wheels()
    node_tarball()
    load = os.getloadavg()[0]
    try:
        for name in HOSTS:
            if name in fleet.hosts:  # left over from an interrupted run
                fleet.remove_host(name)
        started = time.monotonic()
        fleet.up(names=HOSTS)
        up_s = time.monotonic() - started
        limit = ":".join(HOSTS)
        first = fleet.playbook(limit=limit, label="bench-provision")
        if first.rc != 0:
            print(first.tail(), file=sys.stderr)
            return 1
        second = fleet.playbook(limit=limit, label="bench-reprovision")
        if second.rc != 0:
            print(second.tail(), file=sys.stderr)
            return 1
        os.environ.update(fleet.ansible_env())  # the vault password, ansible.cfg
        transport_figures = {
            kind: _transport_figures(fleet, kind, samples)
            for kind, samples in (("ssh", 20), ("ansible", 5))
        }
        alone = set(fleet.hosts) <= set(HOSTS)
        upgrade_figures = _upgrade_figures(fleet) if alone else {}
        if not alone:
            print("rolling upgrade: skipped (other hosts share the inventory)", file=sys.stderr)
    finally:
        for name in HOSTS:
            if name in fleet.hosts:
                fleet.remove_host(name)
        if not was_up:
            fleet.down()
    print(f"fleet up (3 hosts, cached base): {up_s:.1f} s", file=sys.stderr)
    print(f"provision 3 fresh hosts: {first.seconds:.1f} s", file=sys.stderr)
    print(f"rerun: {second.seconds:.1f} s, changed={second.changed()}", file=sys.stderr)
    if second.changed():
        print(f"changed on the rerun: {second.changed_tasks()}", file=sys.stderr)
    print(
        json.dumps(
            {
                "provision_3_s": round(first.seconds, 1),
                "reprovision_3_s": round(second.seconds, 1),
                "changed_on_rerun": second.changed(),
                "ssh_median_ms": transport_figures["ssh"]["median_ms"],
                "ansible_median_ms": transport_figures["ansible"]["median_ms"],
                "poll_1_ssh_ms": transport_figures["ssh"]["poll_1_ms"],
                "poll_3_ssh_ms": transport_figures["ssh"]["poll_3_ms"],
                "poll_1_ansible_ms": transport_figures["ansible"]["poll_1_ms"],
                "poll_3_ansible_ms": transport_figures["ansible"]["poll_3_ms"],
                "fleet_up_3_s": round(up_s, 1),
                "worker_wheels": len(list((REPO / "dist/wheels").glob("*.whl"))),
                "rolling_upgrade_3_s": upgrade_figures.get("seconds"),
                "lost_phases_during_upgrade": upgrade_figures.get("lost"),
                "machine_losses_during_upgrade": upgrade_figures.get("losses"),
                "phases_moved_during_upgrade": upgrade_figures.get("moved"),
                "load_1m_at_start": round(load, 2),
                "cores": os.cpu_count(),
            }
        )
    )
    return 0


def _transport_figures(fleet: Fleet, kind: str, samples: int) -> dict[str, float]:
    """Enqueue-to-claim over real SSH, and one poll of 1 and of 3 hosts, by `kind`.

    The hosts are containers on this machine's kernel, so the worker's claim time and
    ours come from the same clock.
    """
    for name in HOSTS:
        fleet.set_host_vars(name, superagent_transport=kind)
    workers = [w for w in load_inventory(fleet.inventory_dir) if w.name in HOSTS]
    transports = Transports(inventory=fleet.inventory_dir)
    try:
        transports.poll(workers, limit=0)  # connect (ssh) and warm up
        latencies = []
        for number in range(samples):
            started = time.time()
            sent = transports.enqueue(
                workers[0], {"type": "bench", "n": number}, key=f"bench/{kind}/{time.time()}"
            )
            claimed = _claimed_at(fleet, workers[0].name, sent.id)
            latencies.append((claimed - started) * 1000)
        polls = {}
        for count in (1, 3):
            started = time.monotonic()
            transports.poll(workers[:count], limit=0)
            polls[count] = (time.monotonic() - started) * 1000
    finally:
        transports.close()
        for name in HOSTS:
            fleet.set_host_vars(name, superagent_transport=None)
    median = statistics.median(latencies)
    print(
        f"{kind}: enqueue-to-claim median {median:.1f} ms over {samples}; poll of 1 host "
        f"{polls[1]:.0f} ms, of 3 hosts {polls[3]:.0f} ms",
        file=sys.stderr,
    )
    return {
        "median_ms": round(median, 1),
        "poll_1_ms": round(polls[1], 1),
        "poll_3_ms": round(polls[3], 1),
    }


UPGRADE_PHASES = 9  # 30 s each: the run outlasts the first hosts' upgrades


def _upgrade_figures(fleet: Fleet) -> dict[str, Any]:
    """`control upgrade` of the three hosts from the Node 20 line to the Node 22 one, one
    at a time, while a run of sleeping phases goes on: its time, and what the run lost."""
    old = {"nodejs_version": NODE_VERSION, "claude_code_version": CLAUDE_CODE_VERSION}
    for name in HOSTS:  # pinned explicitly, so the run records the Node 20 line
        fleet.set_host_vars(name, superagent_transport="ssh", **old)
    root = Path(tempfile.mkdtemp(prefix="superagent-bench-upgrade-"))
    (root / "git").mkdir()
    server = GitServer(root / "git")
    try:
        url = server.new_remote("bench-upgrade", EXAMPLES / "seed" / "tiny")
        phases: dict[str, tuple[int, list[str]]] = {
            f"p{n}": (30, []) for n in range(UPGRADE_PHASES)
        }
        spec = sleepy_spec(root / "bench-upgrade.json", phases)
        watch = Watch(dispatch(fleet, spec, url, root / "state.db", background=True))
        try:
            watch.wait(lambda e: e.get("event") == "dispatched")
            for name in HOSTS:
                fleet.set_host_vars(name, **node22_vars())
            code, rollout, seconds = upgrade(fleet, root / "state.db")
            seen = watch.finish()
        finally:
            watch.stop()
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"the rolling upgrade failed: {rollout}")
    losses = [e for e in seen if e.get("event") == "phase_lost"]
    moved = [e for e in seen if e.get("event") == "phase_moved"]
    print(
        f"rolling upgrade of 3 hosts under a run: {seconds:.1f} s, "
        f"{UPGRADE_PHASES - len(done_once(seen))} phase(s) lost, {len(losses)} machine "
        f"loss(es), {len(moved)} moved before they started",
        file=sys.stderr,
    )
    for event in losses + moved:  # why: the figure alone does not say
        print(f"  {event['event']} {event.get('phase')} on {event.get('worker')}: "
              f"{event.get('reason')}", file=sys.stderr)  # fmt: skip
    return {"seconds": round(seconds, 1), "lost": UPGRADE_PHASES - len(done_once(seen)),
            "losses": len(losses), "moved": len(moved)}  # fmt: skip


def _claimed_at(fleet: Fleet, host: str, message_id: int) -> float:
    """The message's claim time, read in the host once the worker has claimed it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = fleet.exec(
            host, [CONTROL, "queue", "show", str(message_id), "--db", INBOX, "--json"]
        )
        claimed = json.loads(shown.stdout)["claimed_at"]
        if claimed is not None:
            return float(claimed)
        time.sleep(0.05)
    raise RuntimeError(f"{host} never claimed message {message_id}")


if __name__ == "__main__":
    sys.exit(main())
