"""Where superagent keeps its files when nothing says otherwise."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """`$SUPERAGENT_HOME`, else the XDG data directory: where inboxes and run state live."""
    if home := os.environ.get("SUPERAGENT_HOME"):
        return Path(home)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "superagent"


def default_queue_db() -> Path:
    return Path(os.environ.get("SUPERAGENT_QUEUE_DB") or default_home() / "queue.db")


def default_state_db() -> Path:
    return Path(os.environ.get("SUPERAGENT_STATE_DB") or default_home() / "state.db")
