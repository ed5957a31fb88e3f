"""A slot's checkout as `Workspace.prepare` hands it over: what every later step takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Prepared:
    """A slot's checkout, ready for the agent."""

    slot: str
    path: Path
    branch: str  # the phase's branch on the remote (the checkout itself is detached)
    base: str
    base_commit: str
    head: str  # the commit the agent starts from: the base plus the merged prerequisites
    merged: list[dict[str, Any]] = field(default_factory=list)  # phase, branch, commit, head

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        """The merges committed with conflict markers (`prepare(keep_conflicts=True)`)."""
        return [m for m in self.merged if m.get("conflicts")]

    old_remote_commit: str | None = None  # the branch on the remote at prepare: the lease
