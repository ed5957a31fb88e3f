"""The fleet's network: a bridge in the root namespace, one namespace and veth pair per
host, and a router namespace that masquerades a NAT LAN onto the bridge. Only addresses
inside namespaces made here are ever used."""

from __future__ import annotations

from pathlib import Path

from tests.fleet.harness.config import (
    BRIDGE,
    BRIDGE_ADDRESS,
    BRIDGE_MAC,
    NAT_SUBNET,
    ROUTER_ADDRESS,
    ROUTER_NS,
)
from tests.fleet.harness.host import Host
from tests.fleet.harness.system import delete_link, run


def ensure_bridge() -> None:
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        # A fixed address: otherwise the bridge takes the lowest of its ports' addresses,
        # which changes as hosts come and go, and the hosts' ARP entries go stale.
        run(["ip", "link", "set", BRIDGE, "address", BRIDGE_MAC])
        run(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_router() -> None:
    """The NAT router namespace: one leg on the bridge, one on the NAT LAN."""
    if Path(f"/run/netns/{ROUTER_NS}").exists():
        return
    route_to_nat(False)
    run(["ip", "netns", "add", ROUTER_NS])
    run(["ip", "link", "add", "vsarb", "type", "veth", "peer", "name", "vsarb-p"])
    run(["ip", "link", "set", "vsarb", "master", BRIDGE, "up"])
    run(["ip", "link", "set", "vsarb-p", "netns", ROUTER_NS])
    ns = ["ip", "netns", "exec", ROUTER_NS]
    run([*ns, "ip", "link", "set", "vsarb-p", "name", "wan0"])
    run([*ns, "ip", "addr", "add", f"{ROUTER_ADDRESS}/24", "dev", "wan0"])
    run([*ns, "ip", "link", "set", "wan0", "up"])
    run([*ns, "ip", "link", "set", "lo", "up"])
    run([*ns, "ip", "link", "add", "lan0", "type", "bridge"])
    run([*ns, "ip", "addr", "add", f"{NAT_SUBNET}.1/24", "dev", "lan0"])
    run([*ns, "ip", "link", "set", "lan0", "up"])
    run([*ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run(
        [*ns, "nft", "-f", "-"],
        input=(
            "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority 100;\n"
            f'  oifname "wan0" ip saddr {NAT_SUBNET}.0/24 masquerade\n }}\n}}\n'
        ),
    )


def wire(host: Host) -> None:
    """The host's namespace and veth pair, on the bridge (or the NAT LAN)."""
    if host.netns is None:
        return
    forget_neighbour(host)
    ns = host.netns
    delete_link(host.veth)
    if Path(f"/run/netns/{ns}").exists():
        run(["ip", "netns", "del", ns])
    run(["ip", "netns", "add", ns])
    peer = f"{host.veth}p"
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer])
    run(["ip", "link", "set", peer, "netns", ns])
    inside = ["ip", "netns", "exec", ns]
    run([*inside, "ip", "link", "set", peer, "name", "eth0"])
    run([*inside, "ip", "link", "set", "lo", "up"])
    if host.kind == "nat":
        ensure_router()
        run(["ip", "link", "set", host.veth, "netns", ROUTER_NS])
        router = ["ip", "netns", "exec", ROUTER_NS]
        run([*router, "ip", "link", "set", host.veth, "master", "lan0", "up"])
        run([*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
        run([*inside, "ip", "link", "set", "eth0", "up"])
        run([*inside, "ip", "route", "add", "default", "via", f"{NAT_SUBNET}.1"])
    else:
        run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
        run([*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
        run([*inside, "ip", "link", "set", "eth0", "up"])


def unwire(host: Host) -> None:
    if host.netns:
        # The veth first: deleting the namespace first leaves a "File exists" for a minute.
        delete_link(host.veth)
        if host.kind == "nat":
            run(["ip", "netns", "exec", ROUTER_NS, "ip", "link", "del", host.veth], check=False)
        if Path(f"/run/netns/{host.netns}").exists():
            run(["ip", "netns", "del", host.netns], check=False)


def route_to_nat(present: bool) -> None:
    """Give the orchestrator a route to the NAT LAN (a first provisioning), or take it away.

    Without it the LAN is `unreachable` here: connecting fails at once with "no route to
    host", and nothing goes out through this machine's own default route.
    """
    if present:
        run(["ip", "route", "replace", f"{NAT_SUBNET}.0/24", "via", ROUTER_ADDRESS])
    else:
        run(["ip", "route", "replace", "unreachable", f"{NAT_SUBNET}.0/24"])


def forget_neighbour(host: Host) -> None:
    """Drop the ARP entry of a host's address: a new host there has another MAC, and a
    stale entry makes the address unreachable for several seconds."""
    if host.kind == "nat":
        if Path(f"/run/netns/{ROUTER_NS}").exists():
            run(["ip", "netns", "exec", ROUTER_NS, "ip", "neigh", "flush", "to", host.address],
                check=False)  # fmt: skip
    elif host.netns:
        run(["ip", "neigh", "flush", "to", host.address], check=False)


def remove_shared() -> None:
    """The NAT route, the router namespace and the bridge (the hosts are gone already)."""
    run(["ip", "route", "del", f"{NAT_SUBNET}.0/24"], check=False)
    if Path(f"/run/netns/{ROUTER_NS}").exists():
        delete_link("vsarb")
        run(["ip", "netns", "del", ROUTER_NS], check=False)
