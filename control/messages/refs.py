"""The names an attempt's work goes under: its result's ref, its checkpoints' ref, the
final check's key and ref. Outside refs/heads, so no clone fetches them by default."""

from __future__ import annotations

ATTEMPT_REF_PREFIX = "refs/superagent/attempts/"


def attempt_ref(run_id: str, phase_id: str, attempt: int) -> str:
    """The ref one attempt pushes to (outside refs/heads: no clone fetches it by default)."""
    return f"{ATTEMPT_REF_PREFIX}{run_id}/{phase_id}/{attempt}"


# Work in progress: apart from results, so nothing that reads attempts or branches
# takes a checkpoint for one; only the worker writes here, never the agent.
WIP_REF_PREFIX = "refs/superagent/wip/"


def wip_ref(run_id: str, phase_id: str, attempt: int) -> str:
    """The ref one attempt's checkpoints go to (the last one wins)."""
    return f"{WIP_REF_PREFIX}{run_id}/{phase_id}/{attempt}"


INTEGRATION_KEY_PREFIX = "integration/"


def integration_key(run_id: str, attempt: int) -> str:
    return f"{INTEGRATION_KEY_PREFIX}{run_id}/{attempt}"


def integration_ref(run_id: str, attempt: int) -> str:
    """The ref one attempt of the final check pushes to ('_' never starts a phase id)."""
    return f"{ATTEMPT_REF_PREFIX}{run_id}/_integration/{attempt}"
