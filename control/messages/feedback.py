"""What failed in an earlier attempt, told to the attempt after it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from control.errors import UsageError
from control.messages.verify import VerifyResult


@dataclass(frozen=True)
class Feedback:
    """What failed in an earlier attempt of a phase, for the attempt after it.

    Everything here but `attempt` came from a worker and, through the output of the
    verify commands, from the agent: it reaches the next agent only as framed data
    (`control.worker.prompt`), never a command line. `session_id` is resumed only on
    the worker and slot that ran it (where the agent's session is), when the backend can.
    """

    attempt: int
    reason: str
    worker: str = ""
    slot: str = ""
    backend: str = ""
    session_id: str | None = None
    # The account the session ran on: its Claude Code configuration (and so the session)
    # is that account's, so only an attempt on the same account resumes it.
    account: str | None = None
    verify: tuple[VerifyResult, ...] = ()
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verify"] = [v.to_dict() for v in self.verify]
        data["missing"] = list(self.missing)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Feedback:
        """Parse; a UsageError names the first field that is wrong."""
        if not isinstance(data, dict):
            raise UsageError("phase task field 'feedback' must be an object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if not isinstance(known.get("attempt"), int) or isinstance(known["attempt"], bool):
            raise UsageError("feedback field 'attempt' must be an integer")
        for name in ("reason", "worker", "slot", "backend"):
            if not isinstance(known.get(name, ""), str):
                raise UsageError(f"feedback field {name!r} must be text")
        for name in ("session_id", "account"):
            if known.get(name) is not None and not isinstance(known[name], str):
                raise UsageError(f"feedback field {name!r} must be text")
        missing = known.get("missing", [])
        if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
            raise UsageError("feedback field 'missing' must be a list of text")
        known["missing"] = tuple(missing)
        verify = known.get("verify", [])
        if not isinstance(verify, list):
            raise UsageError("feedback field 'verify' must be a list")
        try:
            known["verify"] = tuple(
                VerifyResult(
                    command=str(v["command"]),
                    exit_code=int(v["exit_code"]),
                    output_tail=str(v.get("output_tail") or ""),
                    timed_out=bool(v.get("timed_out", False)),
                    duration_s=float(v.get("duration_s") or 0.0),
                )
                for v in verify
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise UsageError(f"feedback has a malformed verify entry: {exc}") from exc
        return cls(**known)
