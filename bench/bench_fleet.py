"""Provisioning figures on the real test fleet: three fresh hosts, then an idempotent rerun.

Boots three fresh hosts (bench1..bench3, next to any test fleet already up), times
playbooks/site.yml on them twice and removes them. Needs root and the fleet's packages
(tests/setup-system.sh). The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fleet harness lives in tests/
from control.inventory import load_inventory
from control.pins import WORKER_CONTROL, WORKER_QUEUE_DB
from control.transport import Transports
from tests.fleet.harness import (
    Fleet,
    build_wheels,
    missing_requirements,
    node_tarball,
    session_lock,
)

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
