"""An agent's work in progress, kept across failures and machine loss.

While the agent works, the worker snapshots the checkout every few minutes, and once
more when the attempt ends unfinished (told to stop, failed its checks), and pushes
the snapshot to the attempt's checkpoint ref under refs/superagent/wip/: apart from
results and branches, so nothing reads one for a result. The attempt that replaces it
restores the newest checkpoint it is offered. Only the worker writes these refs; a
snapshot holding a known secret is never pushed. The agent's session (its sandboxed
HOME) is kept on this machine between attempts, so a failed attempt's session can be
resumed with what failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from control.errors import SuperagentError
from control.git import Prepared, Workspace, remove_tree
from control.worker.secrets import secrets_in_files

log = logging.getLogger("superagent.worker.checkpoint")

SESSION_HOMES_KEEP_S = 3 * 86400.0  # a session home unused this long is removed


class Checkpoints:
    """The checkpoints of one attempt: `save` now, or `every` few seconds meanwhile."""

    def __init__(
        self,
        workspace: Workspace,
        prepared: Prepared,
        ref: str | None,
        secrets: list[str],
        label: str,
    ) -> None:
        self.workspace = workspace
        self.prepared = prepared
        self.ref = ref
        self.secrets = secrets
        self.label = label
        self.last: str | None = None
        self.count = 0
        self.refused: list[str] = []  # why a snapshot was not pushed (a secret, git)
        self._lock = threading.Lock()

    def save(self, why: str) -> str | None:
        """Snapshot and push; the commit pushed, or None (nothing changed, no ref, a
        secret in the change, git failed: said in `refused`, never raised)."""
        if self.ref is None:
            return None
        with self._lock:
            try:
                files = self.workspace.checkpoint_files(self.prepared)
                leaks = secrets_in_files(self.prepared.path, files, self.secrets)
                if leaks:
                    self.refused.append(
                        "a secret in " + ", ".join(leak.partition(" (")[0] for leak in leaks[:5])
                    )
                    return None
                commit = self.workspace.checkpoint(
                    self.prepared, self.ref, f"superagent checkpoint: {self.label} ({why})"
                )
            except SuperagentError as exc:
                self.refused.append(str(exc)[:300])
                log.warning("checkpoint of %s failed: %s", self.label, exc)
                return None
            if commit is not None:
                self.last = commit
                self.count += 1
            return commit

    @contextlib.contextmanager
    def every(self, interval_s: float) -> Iterator[None]:
        """Save every `interval_s` seconds while the block runs (the agent works)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                self.save("periodic")

        thread = threading.Thread(target=loop, name=f"checkpoint {self.label}", daemon=True)
        if self.ref is not None:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()

    def to_dict(self) -> dict[str, object]:
        return {"ref": self.ref, "commit": self.last, "count": self.count, "refused": self.refused}


class SessionHomes:
    """The agent's sandboxed HOME (where agent CLIs keep their sessions), kept per
    phase of a run on this machine between attempts."""

    def __init__(self, root: Path, run_id: str, phase_id: str) -> None:
        self.root = root
        digest = hashlib.sha256(f"{run_id}\0{phase_id}".encode()).hexdigest()[:32]
        self.path = root / digest

    def keep(self, scratch: Path) -> None:
        """Move the attempt's HOME aside for the next attempt (an older one goes)."""
        home = scratch / "home"
        if not home.is_dir() or home.is_symlink():
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_tree(self.path)
        shutil.move(str(home), str(self.path))

    def restore(self, scratch: Path) -> bool:
        """Put the kept HOME back as the attempt's; whether there was one."""
        if not self.path.is_dir():
            return False
        home = scratch / "home"
        remove_tree(home)
        shutil.move(str(self.path), str(home))
        return True

    def drop(self) -> None:
        remove_tree(self.path)

    def prune(self, now: float | None = None) -> None:
        """Remove the homes of phases not tried for days (their runs are long over)."""
        if not self.root.is_dir():
            return
        limit = (now or time.time()) - SESSION_HOMES_KEEP_S
        for entry in self.root.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < limit:
                    remove_tree(entry)
