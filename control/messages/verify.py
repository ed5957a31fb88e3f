"""How one verify command ended: the one record the runner (`control.verify`) returns, a
worker's response carries for every command (`PhaseResponse.verify`) and the next
attempt is shown of the failed ones (`Feedback.verify`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class VerifyResult:
    """How one verify command ended (written as `to_dict()`, these fields in this order)."""

    command: str
    exit_code: int  # negative: ended by that signal (a timeout kills the command's group)
    output_tail: str = ""  # the end of its stdout and stderr, interleaved
    timed_out: bool = False
    duration_s: float = 0.0  # how long it ran (0 when not said)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
