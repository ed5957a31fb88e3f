"""Provisioning figures on the real test fleet: three fresh hosts, then an idempotent rerun.

Boots three fresh hosts (bench1..bench3, next to any test fleet already up), times
playbooks/site.yml on them twice and removes them. Needs root and the fleet's packages
(tests/setup-system.sh). The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fleet harness lives in tests/
from tests.fleet.harness import (
    Fleet,
    build_wheels,
    missing_requirements,
    node_tarball,
    session_lock,
)

HOSTS = ("bench1", "bench2", "bench3")


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
    finally:
        for name in HOSTS:
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
                "fleet_up_3_s": round(up_s, 1),
                "load_1m_at_start": round(load, 2),
                "cores": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
