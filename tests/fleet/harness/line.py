"""The line of pins the test fleet runs: the default one of control/pins.json (Node 20),
or a profile of it named by SUPERAGENT_FLEET_PROFILE (`node22`), so that the whole fleet
suite can run on either line. CI runs the default.

`line_vars` is the inventory change that puts hosts on a line: the profile named (or the
default line, the profile cleared), with its Node and Claude Code staged on the
controller (the test fleet has no nodejs.org, and an offline install needs no registry).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from control.pins import CLAUDE_CODE_VERSION, NODE_VERSION, NPM_VERSION, PROFILES
from tests.fleet.harness.artifacts import claude_code_tarballs, node_tarball
from tests.fleet.harness.system import FleetError

PROFILE_VARIABLE = "SUPERAGENT_FLEET_PROFILE"


@dataclass(frozen=True)
class Line:
    profile: str  # "" for the default line
    node: str
    npm: str
    claude_code: str

    @property
    def name(self) -> str:
        return self.profile or "default"


def pins_line(profile: str) -> Line:
    """The pins of `profile` ("" or "default": the default line)."""
    if profile in ("", "default"):
        return Line("", NODE_VERSION, NPM_VERSION, CLAUDE_CODE_VERSION)
    if profile not in PROFILES:
        raise FleetError(
            f"{PROFILE_VARIABLE}={profile!r}: not a profile of control/pins.json "
            f"(default, {', '.join(sorted(PROFILES))})"
        )
    node, claude = PROFILES[profile]["node"], PROFILES[profile]["claude_code"]
    return Line(profile, node["version"], node["npm"], claude["version"])


def fleet_line() -> Line:
    """The line the fleet is provisioned on (SUPERAGENT_FLEET_PROFILE, default line if unset)."""
    return pins_line(os.environ.get(PROFILE_VARIABLE, ""))


def other_line() -> Line:
    """The line a rolling upgrade moves the fleet to: the Node 22 one from the default, and
    back to the default from any profile."""
    return pins_line("node22") if not fleet_line().profile else pins_line("")


def node_vars(of: Line) -> dict[str, Any]:
    """Where the hosts' Node comes from for `of`: its tarball built and staged here."""
    tarball, digest = node_tarball(of.node, of.npm)
    return {"nodejs_controller_tarball": str(tarball), "nodejs_tarball_sha256": digest}


def line_vars(of: Line) -> dict[str, Any]:
    """Host variables that move hosts to `of` (None: a variable removed), Claude Code
    installed offline from tarballs staged here."""
    return {
        "superagent_pins_profile": of.profile,  # "" overrides a profile of the group
        "nodejs_version": None,
        "claude_code_version": None,
        **node_vars(of),
        "claude_code_source": "controller_tarball",
        "claude_code_controller_tarballs": [str(t) for t in claude_code_tarballs(of.claude_code)],
    }
