"""One host of the fleet as the harness records it: name, index (its address), kind, the
nspawn process and its inventory variables."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.fleet.harness.config import BRIDGE_ADDRESS, GATEWAY_PORT, NAT_SUBNET, SUBNET


@dataclass
class Host:
    name: str
    index: int
    kind: str = "worker"  # worker | nat (a worker behind NAT) | gateway (the tunnel endpoint)
    pid: int | None = None  # the systemd-nspawn process
    vars: dict[str, Any] = field(default_factory=dict)  # inventory variables

    @property
    def address(self) -> str:
        if self.kind == "gateway":
            return BRIDGE_ADDRESS
        if self.kind == "nat":
            return f"{NAT_SUBNET}.{10 + self.index}"
        return f"{SUBNET}.{10 + self.index}"

    @property
    def netns(self) -> str | None:
        return None if self.kind == "gateway" else f"sa-{self.name}"

    @property
    def veth(self) -> str:
        return f"vsa{self.index}"

    @property
    def ssh_port(self) -> int:
        return GATEWAY_PORT if self.kind == "gateway" else 22


NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
