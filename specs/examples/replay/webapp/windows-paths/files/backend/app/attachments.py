"""Task attachments, stored under a configurable directory with names NTFS accepts.

A name loses its directory part (browsers on Windows may send C:\\Users\\...), the reserved
characters and trailing dots and spaces; reserved device names (CON, NUL, COM1, ...) get a
leading underscore; the whole path stays within MAX_PATH characters; and names are unique
case-insensitively, as NTFS compares them (report.PDF and Report.pdf are the same file).
"""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath

MAX_PATH = 240
RESERVED_CHARS = set('<>:"/\\|?*') | {chr(c) for c in range(32)}
RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)
}


def safe_name(name: str) -> str:
    """`name` as a valid NTFS file name."""
    base = PureWindowsPath(name).name  # splits on both \\ and /
    cleaned = "".join("_" if c in RESERVED_CHARS else c for c in base).rstrip(" .")
    if cleaned.split(".")[0].rstrip(" ").upper() in RESERVED_NAMES:
        cleaned = "_" + cleaned
    return cleaned or "attachment"


def fit_name(
    folder: PureWindowsPath | Path, name: str, n: int = 1, max_path: int = MAX_PATH
) -> str:
    """`name` (the n-th of its kind gets " (n)") cut so that folder\\name fits in `max_path`."""
    stem, dot, extension = name.rpartition(".")
    if not stem:  # no extension, or a name like ".env"
        stem, dot, extension = name, "", ""
    tag = f" ({n})" if n > 1 else ""
    room = max_path - len(str(folder)) - 1 - len(tag) - len(dot + extension)
    if room < 1:
        raise ValueError(f"the attachment directory {folder} leaves no room for a name")
    return stem[:room].rstrip(" .") + tag + dot + extension


class AttachmentStore:
    def __init__(self, root: Path | str, max_path: int = MAX_PATH) -> None:
        self.root, self.max_path = Path(root), max_path

    def folder(self, task_id: int) -> Path:
        return self.root / f"task-{task_id}"

    def names(self, task_id: int) -> list[str]:
        folder = self.folder(task_id)
        return sorted(os.listdir(folder)) if folder.is_dir() else []

    def save(self, task_id: int, filename: str, data: bytes) -> Path:
        """Store `data` under a safe, unique name; the path it was written to."""
        folder = self.folder(task_id)
        folder.mkdir(parents=True, exist_ok=True)
        taken = {name.casefold() for name in self.names(task_id)}
        name, n = safe_name(filename), 1
        while (candidate := fit_name(folder, name, n, self.max_path)).casefold() in taken:
            n += 1
        path = folder / candidate
        with open(path, "xb") as handle:  # never overwrite: a race ends in an error, not a loss
            handle.write(data)
        return path
