"""`make bench-escape`: the escape corpus (tests/escape.py) on a local worker, and what
the sandbox costs a phase: the extra start-up of each sandboxed command (the agent and
each verify command), measured against the same command unsandboxed.

The last line is one JSON object: attempts, blocked, detected, escaped, sandbox_overhead_ms
(per phase of one agent run and one verify command)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the corpus lives in tests/

from control.process import run_watched
from control.worker.sandbox import Jail, Sandbox
from tests.escape import run_corpus, summary

ROUNDS = 30


def _spawn_ms(root: Path, sandboxed: bool) -> list[float]:
    checkout, scratch = root / "checkout", root / "scratch"
    checkout.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    wrap = Sandbox.find().wrapper(Jail(checkout, scratch)) if sandboxed else None
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run_watched(["/bin/true"], cwd=checkout, env=dict(os.environ), log_path=None,
                    wall_timeout_s=30, wrap=wrap)  # fmt: skip
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-escape-") as tmp:
        root = Path(tmp)
        plain = statistics.median(_spawn_ms(root, False))
        boxed = statistics.median(_spawn_ms(root, True))
        per_command = max(0.0, boxed - plain)
        print(f"one command: {plain:.1f} ms unsandboxed, {boxed:.1f} ms sandboxed (median of "
              f"{ROUNDS}); +{per_command:.1f} ms each")  # fmt: skip
        verdicts = run_corpus(root / "corpus")
    for verdict in verdicts:
        print(f"{verdict.outcome:9} {verdict.name}: {verdict.detail[:160]}")
    result = {**summary(verdicts), "sandbox_overhead_ms": round(2 * per_command, 1)}
    print(f"sandbox cost per phase (agent + one verify command): {2 * per_command:.1f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
