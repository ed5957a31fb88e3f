"""What git operations raise: a failed command, a push refused by its lease, a conflict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from control.errors import ConflictError, ExitCode, SuperagentError
from control.messages import PrerequisiteRef


class GitError(SuperagentError):
    """A git command failed: the message names it and ends with git's last words."""

    def __init__(self, message: str, *, command: str = "", stderr_tail: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.stderr_tail = stderr_tail


class PushRejected(GitError):
    """The remote branch is not where this worker expected: someone else pushed to it."""

    exit_code = ExitCode.CONFLICT

    def __init__(self, message: str, *, branch: str, expected: str | None, found: str | None):
        super().__init__(message, command="git push")
        self.branch = branch
        self.expected = expected
        self.found = found


class MergeConflict(ConflictError):
    """A prerequisite does not merge cleanly; the checkout is left as it was before it."""

    def __init__(self, prerequisite: PrerequisiteRef, files: Sequence[str]) -> None:
        self.phase = prerequisite.phase
        self.branch = prerequisite.branch
        self.commit = prerequisite.commit
        self.files = list(files)
        shown = ", ".join(self.files) or "(git named no files)"
        super().__init__(
            f"prerequisite {self.phase!r} ({self.branch} at {self.commit[:12]}) does not merge "
            f"cleanly: conflicts in {shown}"
        )

    def to_dict(self) -> dict[str, Any]:
        """What a response says about the conflict."""
        return {
            "phase": self.phase,
            "branch": self.branch,
            "commit": self.commit,
            "files": self.files,
        }
