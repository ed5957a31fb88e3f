"""Health probe of the superagent worker unit: exit 0 once its running process beats.

A heartbeat counts when the worker wrote it after the unit last became active, says
idle, busy or drained, and is at most --max-age seconds old. Otherwise it prints why and
exits 1. Drained counts: a host is provisioned drained in a rolling upgrade (`control
upgrade`), and a drained worker beats `drained` only once its checks pass (else `refusing`).
"""

import argparse
import json
import os
import subprocess
import sys
import time

# What a running, fit worker beats (control/worker/daemon.py): `refusing`, `stopping`
# and `stopped` are the others.
HEALTHY = ("idle", "busy", "drained")


def unit_state(unit: str) -> tuple[str, float]:
    """(ActiveState, wall-clock time the unit became active)."""
    out = subprocess.run(
        ["systemctl", "show", unit, "--property=ActiveState,ActiveEnterTimestampMonotonic"],
        capture_output=True, text=True, check=True,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    since_us = int(props.get("ActiveEnterTimestampMonotonic") or 0)
    return props.get("ActiveState", "unknown"), time.time() - (time.monotonic() - since_us / 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--unit", required=True)
    parser.add_argument("--max-age", type=float, default=45.0)
    args = parser.parse_args()
    state, active_since = unit_state(args.unit)
    if state != "active":
        print(f"{args.unit} is {state}")
        return 1
    control = os.path.join(os.path.dirname(sys.executable), "control")
    done = subprocess.run(
        [control, "queue", "stats", "--db", args.db, "--json"], capture_output=True, text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"control queue stats failed: {done.stderr.strip()[-300:]}")
        return 1
    beats = [b for b in json.loads(done.stdout)["heartbeats"] if b["worker_id"] == args.worker]
    if not beats:
        print(f"no heartbeat from {args.worker} yet")
        return 1
    beat = beats[0]
    age = time.time() - beat["beat_at"]
    print(json.dumps({"worker": args.worker, "status": beat["status"], "age_s": round(age, 1),
                      "versions": beat["versions"], "reason": beat["reason"]}))
    if beat["beat_at"] < active_since - 1.0:
        print(f"the last heartbeat predates the unit's start ({beat['status']})")
        return 1
    if beat["status"] not in HEALTHY:
        print(f"the worker says {beat['status']}: {beat['reason'] or 'no reason given'}")
        return 1
    return 0 if age <= args.max_age else 1


if __name__ == "__main__":
    sys.exit(main())
