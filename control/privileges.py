"""Run as the inbox's owner: root reaching a worker over SSH must not leave root-owned
files (`queue.db-wal`, `queue.db-shm`) that the unprivileged worker can no longer write.
"""

from __future__ import annotations

import os
from pathlib import Path


def become_owner_of(path: Path) -> bool:
    """When running as root and `path` belongs to another user, become that user
    (group and supplementary groups first, then the user, for good). True if it did."""
    if os.geteuid() != 0:
        return False
    try:
        info = path.stat()
    except OSError:
        return False  # a missing inbox is reported by whoever opens it
    if info.st_uid == 0:
        return False
    os.setgroups([])
    os.setgid(info.st_gid)
    os.setuid(info.st_uid)
    return True
