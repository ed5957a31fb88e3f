"""The fleet's command line (`make fleet-up` / `make fleet-down`, through tests/fleet/fleet.sh):
up, down, status, add, remove."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from tests.fleet.harness.fleet import Fleet
from tests.fleet.harness.system import FleetError, log

DESCRIPTION = "The test fleet: real Debian hosts on this machine (systemd-nspawn), for the roles."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up N hosts (host1..hostN) and write the inventory")
    up.add_argument("-n", "--hosts", type=int, default=int(os.environ.get("FLEET_HOSTS", "3")))
    sub.add_parser("down", help="remove every host, the network and the proxy (keep the caches)")
    sub.add_parser("status", help="the hosts and whether they run (JSON)")
    add = sub.add_parser("add", help="bring up one more host")
    add.add_argument("name")
    add.add_argument("--kind", choices=["worker", "nat", "gateway"], default="worker")
    remove = sub.add_parser("remove", help="remove one host")
    remove.add_argument("name")
    args = parser.parse_args(argv)
    fleet = Fleet()
    try:
        if args.command == "up":
            started = time.monotonic()
            fleet.up(args.hosts)
            log(
                f"{args.hosts} host(s) up in {time.monotonic() - started:.0f}s; inventory: "
                f"{fleet.inventory_dir}"
            )
            log(
                "provision them: make provision INVENTORY=.fleet/inventory "
                "VAULT_PASSWORD_FILE=.fleet/vault-password"
            )
        elif args.command == "down":
            fleet.down()
            log("the fleet is down")
        elif args.command == "add":
            fleet.add_host(args.name, args.kind)
        elif args.command == "remove":
            fleet.remove_host(args.name)
        else:
            status = {
                n: {"address": h.address, "kind": h.kind, "running": fleet.running(n)}
                for n, h in fleet.hosts.items()
            }
            print(json.dumps(status, indent=2))
    except FleetError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 1
    return 0
