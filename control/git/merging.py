"""A prerequisite merged into a slot's checkout at the commit the orchestrator verified:
cleanly, or refused as a conflict, or committed with its markers for the agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control.git.errors import MergeConflict
from control.git.runner import Git
from control.messages import PrerequisiteRef

CONFLICT_DIFF_CHARS = 6000  # of each side's change to the conflicting files, for the agent


class Merging(Git):
    """Merges inside a checkout (never in the shared clone)."""

    def _merge(
        self, path: Path, prerequisite: PrerequisiteRef, *, keep_conflicts: bool = False
    ) -> dict[str, Any]:
        message = (
            f"superagent: merge prerequisite {prerequisite.phase} "
            f"({prerequisite.branch} at {prerequisite.commit[:12]})"
        )
        done = self._git(
            "merge", "--no-ff", "--no-edit", "--quiet", "-m", message,
            "--", prerequisite.commit,
            cwd=path, ok_codes=None,
        )  # fmt: skip
        if done.returncode != 0:
            conflicted = self._git(
                "diff", "--name-only", "-z", "--diff-filter=U", cwd=path, ok_codes=None
            )
            files = sorted({name for name in conflicted.stdout.split("\0") if name})
            if files and keep_conflicts:
                return self._keep_conflict(path, prerequisite, files, message)
            self._git("merge", "--abort", cwd=path, ok_codes=None)
            if files:
                raise MergeConflict(prerequisite, files)
            raise self._error(
                ("merge",),
                done.returncode,
                done.stderr or done.stdout,
                context=f"merging prerequisite {prerequisite.phase!r}",
            )
        return {
            "phase": prerequisite.phase,
            "branch": prerequisite.branch,
            "commit": prerequisite.commit,
            "head": self._rev_parse(path, "HEAD"),
        }

    def _keep_conflict(
        self, path: Path, prerequisite: PrerequisiteRef, files: list[str], message: str
    ) -> dict[str, Any]:
        """Commit a conflicted merge as it stands, markers and all, with each side's
        change to the conflicting files (cut to size) for the agent who resolves it."""

        def side(spec: str) -> str:
            done = self._git(
                "diff", "--no-color", "--no-ext-diff", "--no-textconv", spec, "--", *files,
                cwd=path, ok_codes=None,
            )  # fmt: skip
            return done.stdout[-CONFLICT_DIFF_CHARS:]

        ours, theirs = side("MERGE_HEAD...HEAD"), side("HEAD...MERGE_HEAD")
        self._git("add", "--all", "--", ".", cwd=path)
        self._git(
            "commit", "--no-verify", "--quiet", "--file=-",
            cwd=path, stdin=f"{message}\n\nconflicts left for the agent: {', '.join(files)}",
        )  # fmt: skip
        return {
            "phase": prerequisite.phase,
            "branch": prerequisite.branch,
            "commit": prerequisite.commit,
            "head": self._rev_parse(path, "HEAD"),
            "conflicts": files,
            "ours_diff": ours,
            "theirs_diff": theirs,
        }
