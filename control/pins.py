"""The pinned versions and the worker's install paths, read from `pins.json` beside this file.

That one file is the source for everything that names a pin: the Ansible roles read it
with a file lookup, the Makefile and the test fleet through this module, the worker
through the installed package. JSON because it ships inside the wheel and the standard
library reads it on a worker that has no inventory.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Final

PINS_FILE: Final = "pins.json"


def load() -> dict[str, Any]:
    """The whole file, parsed (a fresh copy each call)."""
    text = resources.files("control").joinpath(PINS_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


_PINS: Final = load()

NODE_VERSION: Final[str] = _PINS["node"]["version"]
NPM_VERSION: Final[str] = _PINS["node"]["npm"]  # the npm that NODE_VERSION ships with
NODE_SHA256: Final[dict[str, str]] = dict(_PINS["node"]["sha256"])
CLAUDE_CODE_VERSION: Final[str] = _PINS["claude_code"]["version"]
# Where the worker role puts the inbox and superagent's virtualenv (its defaults read these).
WORKER_QUEUE_DB: Final[str] = _PINS["worker"]["queue_db"]
WORKER_VENV: Final[str] = _PINS["worker"]["venv"]
WORKER_CONTROL: Final[str] = f"{WORKER_VENV}/bin/control"
# Other lines of pins a fleet can move to (`superagent_pins_profile` in its inventory).
PROFILES: Final[dict[str, dict[str, Any]]] = dict(_PINS.get("profiles", {}))


def profile(name: str) -> dict[str, Any]:
    """One profile's pins ({"node": {...}, "claude_code": {...}}); KeyError names the known."""
    if name not in PROFILES:
        raise KeyError(f"no pins profile {name!r} in {PINS_FILE} ({', '.join(sorted(PROFILES))})")
    return PROFILES[name]
