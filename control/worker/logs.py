"""One log file per message a worker runs, and the rotation that bounds how many are kept.

A log is named after the message and the phase, so the response can name it and a
person can find it; rotation keeps the newest N and never touches other files.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from control.errors import UsageError

LOG_SUFFIX = ".log"
DEFAULT_KEEP = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(part: str) -> str:
    cleaned = _UNSAFE.sub("_", part).strip("._")
    return cleaned[:80] or "x"


def log_path_for(logs_dir: Path, message_id: int | str, phase_id: str, attempt: int = 1) -> Path:
    """Where the log of one attempt at one message goes: `<dir>/<message>-<phase>-a<N>.log`."""
    name = f"{_safe(str(message_id))}-{_safe(phase_id)}-a{int(attempt)}{LOG_SUFFIX}"
    return logs_dir / name


def rotate_logs(logs_dir: Path, keep: int = DEFAULT_KEEP, *, protect: Path | None = None) -> int:
    """Delete all but the newest `keep` `*.log` files in `logs_dir`; return how many went.

    `protect` (the log of the run about to start) is never deleted and counts as newest.
    Only regular files ending in `.log` directly in `logs_dir` are considered.
    """
    if keep < 0:
        raise UsageError(f"the number of logs to keep cannot be negative ({keep})")
    if not logs_dir.is_dir():
        return 0
    logs: list[tuple[float, str, Path]] = []
    for entry in logs_dir.iterdir():
        if entry.suffix != LOG_SUFFIX or entry.is_symlink() or not entry.is_file():
            continue
        if protect is not None and entry.resolve() == protect.resolve():
            continue
        with contextlib.suppress(FileNotFoundError):
            logs.append((entry.stat().st_mtime, entry.name, entry))
    logs.sort(reverse=True)
    room = max(0, keep - (1 if protect is not None else 0))
    removed = 0
    for _, _, path in logs[room:]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed
