"""How a worker's health is judged: one home for the thresholds and the reading of a
heartbeat, shared by `control health` (a one-shot look) and the orchestrator's liveness
(which judges by when it saw the heartbeat change, so clock skew does not matter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from control import __version__
from control.inventory import Worker
from control.pins import PROFILES
from control.transport import PollResult

# A worker whose heartbeat has not changed for this long is taken for dead (the
# orchestrator's `--heartbeat-timeout` default; workers beat every few seconds).
HEARTBEAT_TIMEOUT_S = 60.0
# A message pending this long on a live worker raises an alert.
PENDING_ALERT_S = 600.0
REFUSING = "refusing"
STOPPED = "stopped"
NOT_WORKING = (REFUSING, STOPPED)


def beat_of(name: str, result: PollResult) -> dict[str, Any] | None:
    """The worker's heartbeat in a poll answer: its own, or the only one its inbox has
    (an inbox serves one worker, whatever it calls itself)."""
    beat = next((b for b in result.heartbeats if b.get("worker_id") == name), None)
    if beat is None and len(result.heartbeats) == 1:
        beat = result.heartbeats[0]
    return beat


def pins_of(worker: Worker) -> dict[str, str]:
    """The versions the inventory pins for a worker (the Ansible roles' variables: set
    one by one, or a line of control/pins.json named by `superagent_pins_profile`)."""
    pins = {"superagent": __version__}
    line = PROFILES.get(str(worker.vars.get("superagent_pins_profile") or ""), {})
    node = worker.vars.get("nodejs_version") or line.get("node", {}).get("version")
    claude_code = worker.vars.get("claude_code_version") or line.get("claude_code", {}).get(
        "version"
    )
    if node:
        pins["node"] = str(node).removeprefix("v")
    if claude_code:
        pins["claude_code"] = str(claude_code)
    return pins


def fleet_pins(workers: Sequence[Worker]) -> dict[str, str]:
    """The pins every worker of the inventory shares: what a run started now runs on
    (a pin the hosts disagree on is left to each worker's own check)."""
    each = [pins_of(w) for w in workers]
    if not each:
        return {}
    return {k: v for k, v in each[0].items() if all(p.get(k) == v for p in each[1:])}


def off_pins(versions: Mapping[str, Any] | None, pins: Mapping[str, str] | None) -> list[str]:
    """How a worker's reported versions differ from `pins` ("node 22.11.0, pinned
    20.18.1"); a version it does not report is not held against it."""
    found = versions or {}
    return [
        f"{name} {found[name]}, pinned {pinned}"
        for name, pinned in (pins or {}).items()
        if found.get(name) is not None and str(found[name]).removeprefix("v") != pinned
    ]


def health_report(worker: Worker, result: PollResult, now: float) -> dict[str, Any]:
    """One worker's health, for `control health`: what was found and every problem."""
    report: dict[str, Any] = {
        "worker": worker.name,
        "transport": worker.transport,
        "reachable": result.reachable,
        # Agents run unsandboxed there, as the worker: shown, never silent.
        "trusted_host": bool(worker.vars.get("superagent_trusted_host", False)),
        "problems": [],
    }
    problems: list[str] = report["problems"]
    if not result.reachable:
        problems.append(f"unreachable: {result.error}")
        return report
    beat = beat_of(worker.name, result)
    report["drained"] = result.drain  # an operator's choice: shown, not a problem
    stats = result.stats
    by_state = stats.get("by_state", {})
    report.update(
        pending=by_state.get("pending", 0),
        running=by_state.get("claimed", 0),
        oldest_pending_s=stats.get("oldest_pending_age_s"),
        unacked=stats.get("unacked_responses", 0),
    )
    if beat is None:
        problems.append("no heartbeat: the worker has never run")
        return report
    age = now - float(beat["beat_at"])
    versions = beat.get("versions") or {}
    report.update(
        status=beat.get("status"),
        heartbeat_age_s=round(age, 1),
        versions=versions,
        current=[c.get("phase") or c.get("key") for c in beat.get("current", [])],
    )
    if beat.get("status") == REFUSING:
        problems.append(f"refusing work: {beat.get('reason')}")
    elif beat.get("status") == STOPPED:
        problems.append("the worker is stopped")
    elif age > HEARTBEAT_TIMEOUT_S:
        problems.append(f"heartbeat {age:.0f}s old")
    problems.extend(off_pins(versions, pins_of(worker)))
    oldest = report.get("oldest_pending_s")
    if oldest is not None and oldest > PENDING_ALERT_S and beat.get("status") != "busy":
        problems.append(f"a message has been pending for {oldest:.0f}s")
    return report


def claude_code_problem(versions: Mapping[str, Any]) -> str | None:
    """Why Claude Code cannot run on a worker, by its heartbeat's versions, with what to
    do; None when it can, or when the worker does not say (an older worker)."""
    if "claude_code" in versions and not versions["claude_code"]:
        return "`claude` is not installed (`make provision` installs it: the claude_code role)"
    if "claude_auth" in versions and not versions["claude_auth"]:
        return (
            "Claude Code has no credential (a provisioned host: set claude_code_api_key or "
            "claude_code_oauth_token in the inventory, in Ansible Vault, then `make "
            "provision`; a local worker: ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN in its "
            "environment or credential file; a `claude /login` is not seen by a sandboxed "
            "agent)"
        )
    return None
