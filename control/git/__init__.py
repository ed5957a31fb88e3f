"""The git workspace of one machine: one local clone, one worktree per slot.

A phase gets a clean detached checkout of its base, the prerequisites merged at the
exact commits the orchestrator verified, and after the agent one commit by the
worker pushed with a lease on the branch's previous value. Git runs from argv lists
with a timeout, no prompts, and nothing the repository controls (see `runner`). Refs
and URLs are validated and come after `--`. Credentials are the machine's own (SSH key,
credential helper).
"""

from control.git.checks import validate_branch, validate_remote_url, workspace_root
from control.git.clone import remove_tree
from control.git.errors import GitError, MergeConflict, PushRejected
from control.git.prepared import Prepared
from control.git.workspace import Workspace

__all__ = [
    "GitError",
    "MergeConflict",
    "Prepared",
    "PushRejected",
    "Workspace",
    "remove_tree",
    "validate_branch",
    "validate_remote_url",
    "workspace_root",
]
