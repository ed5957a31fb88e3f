"""Never start over, measured: agent minutes with feedback and checkpoints against blind
retries from scratch, minutes lost per machine loss, and conflicts resolved unattended.

A replay simulation of N phases (default 100) with seeded verify-failure and machine-
loss rates. Each phase needs some minutes of agent work; an attempt may lose its
machine part-way, and a finished attempt may fail its verify. What the next attempt
starts from is decided by the real policy, `control.recovery.continuation`, over the
attempts so far: with feedback and checkpoints (the defaults) a failed attempt is
followed by a short fix round that continues its work, and a lost one by an attempt
that starts from its last checkpoint (taken every `--checkpoint-minutes`); blind
(feedback_rounds 0, no checkpoints) every retry starts from nothing.

The conflicts are real: pairs of phases that change the same lines of a file in a real
git remote, merged by `Workspace.prepare(keep_conflicts=True)` for a replayed agent
that keeps both sides, checked for markers left (`conflict_markers_left`) and
committed; without resolution (`keep_conflicts=False`) none of them gets through.

The merge queue is the real policy too, `control.merge_queue.plan`, over simulated
checks: of N phases accepted at once, a few break the integration only beside another
(each passes alone); a check fails while it holds such a pair. Every culprit is found
by bisecting and redone (its new commit no longer breaks it); the figures are the
checks of merged states the run needed, per culprit found.

The last line is one JSON object: agent_minutes_ratio_vs_scratch,
lost_minutes_per_machine_loss, conflicts_resolved_share, queue_checks_per_culprit (and
the figures behind them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from control.dag import Dag
from control.errors import ConflictError
from control.git import Workspace
from control.merge_queue import plan
from control.messages import PrerequisiteRef, wip_ref
from control.recovery import continuation
from control.state import AttemptRow, IntegrationRow
from control.verify import conflict_markers_left

RUN = "bench"
MAX_TRIES = 50  # a phase always finishes in the simulation: its cost is what we compare


@dataclass
class Model:
    fail_rate: float = 0.3  # a finished attempt fails its verify
    loss_rate: float = 0.15  # an attempt loses its machine part-way
    fix_share: float = 0.25  # of the phase's work, a fix round told what failed
    fix_pass: float = 0.85  # a fix round told what failed then passes
    checkpoint_minutes: float = 5.0
    feedback_rounds: int = 2


@dataclass
class Tally:
    minutes: float = 0.0
    losses: int = 0
    lost_minutes: float = 0.0
    attempts: int = 0
    rows: list[AttemptRow] = field(default_factory=list)


def _row(phase: str, attempt: int, state: str, status: str | None) -> AttemptRow:
    response = {"response": {"status": status, "reason": "verify failed"}} if status else None
    return AttemptRow(
        run_id=RUN, phase_id=phase, attempt=attempt, key=f"{RUN}/{phase}/{attempt}",
        worker="w", message_id=attempt, state=state, created_at=float(attempt),
        dispatched_at=None, finished_at=None, reason=None, response=response,
        late_response=None, cancel_sent=False,
    )  # fmt: skip


def simulate_phase(phase: str, work: float, model: Model, rng: random.Random, *,
                   recover: bool) -> Tally:  # fmt: skip
    """One phase to its end; agent minutes spent, machine losses and minutes they cost."""
    tally = Tally()
    saved: dict[str, float] = {}  # checkpoint ref -> minutes of the phase's work it holds
    rounds = model.feedback_rounds if recover else 0
    for attempt in range(1, MAX_TRIES + 1):
        after = continuation(tally.rows, attempt, rounds)
        start = next((saved[r] for r in after.resume_refs if r in saved), 0.0)
        # Told what failed, on top of the failed work: a fix round, short. Otherwise
        # the work left from where the checkout starts.
        fixing = after.feedback is not None and start >= work
        need = model.fix_share * work if fixing else work - start
        tally.attempts += 1
        if rng.random() < model.loss_rate:
            at = rng.uniform(0, need)
            tally.minutes += at
            tally.losses += 1
            kept = (at // model.checkpoint_minutes) * model.checkpoint_minutes if recover else 0.0
            if fixing:
                kept = 0.0  # a fix round interrupted is done again whole
            if recover:
                saved[wip_ref(RUN, phase, attempt)] = work if fixing else start + kept
            tally.lost_minutes += at - kept
            tally.rows.append(_row(phase, attempt, "abandoned", None))
            continue
        tally.minutes += need
        if rng.random() < (model.fix_pass if fixing else 1 - model.fail_rate):
            return tally
        if recover:
            saved[wip_ref(RUN, phase, attempt)] = work  # pushed as the failed attempt ended
        tally.rows.append(_row(phase, attempt, "failed", "failed"))
    return tally


def agent_minutes(phases: int, model: Model, seed: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for mode in ("scratch", "recover"):
        rng = random.Random(seed)  # the same phases, failures and losses drawn in order
        total = Tally()
        for i in range(phases):
            work = rng.uniform(10, 60)
            tally = simulate_phase(f"p{i}", work, model, rng, recover=mode == "recover")
            total.minutes += tally.minutes
            total.losses += tally.losses
            total.lost_minutes += tally.lost_minutes
            total.attempts += tally.attempts
        figures[f"{mode}_agent_minutes"] = round(total.minutes, 1)
        figures[f"{mode}_attempts"] = total.attempts
        figures[f"{mode}_machine_losses"] = total.losses
        figures[f"{mode}_lost_minutes_per_loss"] = round(
            total.lost_minutes / total.losses if total.losses else 0.0, 2
        )
    return figures


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def conflicts(pairs: int, root: Path) -> dict[str, float]:
    """Pairs of phases changing the same line, merged for a replayed resolver; the share
    resolved (markers gone, committed on top of both) with and without resolution."""
    remote, dev = root / "remote.git", root / "dev"
    _git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    _git(root, "init", "--quiet", "--initial-branch=main", str(dev))
    for i in range(pairs):
        (dev / f"f{i}.txt").write_text("shared line\nsecond\n")
    _git(dev, "add", "--all")
    _git(dev, "commit", "--quiet", "-m", "seed")
    _git(dev, "push", "--quiet", str(remote), "HEAD:refs/heads/main")
    refs: list[tuple[PrerequisiteRef, PrerequisiteRef, str]] = []
    for i in range(pairs):
        sides = []
        for side in ("left", "right"):
            _git(dev, "checkout", "--quiet", "-B", f"{side}{i}", "main")
            (dev / f"f{i}.txt").write_text(f"shared line ({side})\nsecond\n")
            _git(dev, "commit", "--quiet", "--all", "-m", side)
            _git(dev, "push", "--quiet", str(remote), f"HEAD:refs/heads/{side}{i}")
            sides.append(PrerequisiteRef(side, f"{side}{i}", _git(dev, "rev-parse", "HEAD")))
        refs.append((sides[0], sides[1], f"f{i}.txt"))
    found = {}
    for resolve in (False, True):
        ws = Workspace(root / f"work-{resolve}", str(remote), author_name="b", author_email="b@b")
        resolved = 0
        for left, right, name in refs:
            try:
                prepared = ws.prepare("s0", "x", "main", [left, right], keep_conflicts=resolve)
            except ConflictError:
                continue
            # The replayed resolver keeps both sides' lines, markers out.
            path = prepared.path / name
            lines = path.read_text().splitlines()
            kept = [ln for ln in lines if not ln.startswith(("<<<<<<< ", "=======", ">>>>>>> "))]
            path.write_text("\n".join(kept) + "\n")
            if conflict_markers_left(prepared.path, prepared.conflicts):
                continue
            head = ws.commit_all(prepared, "resolved")
            both = all(
                subprocess.run(
                    ["git", "-C", str(ws.repo_path), "merge-base", "--is-ancestor", c, head],
                    check=False,
                ).returncode == 0
                for c in (left.commit, right.commit)
            )  # fmt: skip
            resolved += int(both and "(left)" in path.read_text() and "(right)" in path.read_text())
        found["with" if resolve else "without"] = resolved / pairs
    return {"conflicts": pairs, "resolved_share_without": found["without"],
            "resolved_share": found["with"]}  # fmt: skip


def _check(n: int, phases: list[str], commits: dict[str, str], ok: bool) -> IntegrationRow:
    """A simulated check of a merged state, as the `integrations` table holds one."""
    answer = (
        {"status": "done", "commit": f"{n:040x}"}
        if ok
        else {"status": "failed", "failed_phases": [phases[-1]], "reason": "it fails"}
    )
    body = {"type": "integration_result", "version": 1, "run_id": RUN, "attempt": n,
            "branch": "b", **answer}  # fmt: skip
    return IntegrationRow(
        run_id=RUN, attempt=n, key=f"integration/{RUN}/{n}", worker="w",
        state="done" if ok else "failed", created_at=float(n), finished_at=None, reason=None,
        response={"state": "done", "response": body}, late_response=None,
        task={"phases": [{"phase": p, "branch": p, "commit": commits[p]} for p in phases]},
    )  # fmt: skip


def merge_queue(phases: int, culprits: int, seed: int) -> dict[str, float]:
    """Checks of merged states the queue needs to find `culprits` phases that break the
    integration only beside another, all accepted at once, and to merge every phase."""
    rng = random.Random(seed)
    names = [f"p{i:03d}" for i in range(phases)]
    dag = Dag({n: [d for d in names[:i] if rng.random() < 2 / (i + 1)] for i, n in
               enumerate(names)})  # fmt: skip
    broken = rng.sample(names[phases // 2 :], culprits)
    partner = {c: rng.choice(names[: names.index(c)]) for c in broken}  # merged before it
    commits = {n: f"{i:040x}" for i, n in enumerate(names)}
    rows: list[IntegrationRow] = []
    found = 0
    while True:
        step = plan(dag, commits, rows)
        if step.culprit is not None:
            found += 1
            broken.remove(step.culprit)  # redone: its new commit merges cleanly
            commits[step.culprit] = f"{len(rows) + phases:040x}"
            continue
        if not step.check:
            break
        held = set(step.check)
        ok = not any(c in held and partner[c] in held for c in broken)
        rows.append(_check(len(rows) + 1, list(step.check), commits, ok))
    return {
        "queue_phases": phases,
        "queue_culprits_found": found,
        "queue_checks": len(rows),
        "queue_checks_per_culprit": round((len(rows) - 1) / max(found, 1), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=100)
    parser.add_argument("--conflicts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--culprits", type=int, default=3)
    parser.add_argument("--fail-rate", type=float, default=Model.fail_rate)
    parser.add_argument("--loss-rate", type=float, default=Model.loss_rate)
    parser.add_argument("--checkpoint-minutes", type=float, default=Model.checkpoint_minutes)
    args = parser.parse_args(argv)
    model = Model(
        fail_rate=args.fail_rate,
        loss_rate=args.loss_rate,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    minutes = agent_minutes(args.phases, model, args.seed)
    env = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}  # fmt: skip
    os.environ.update(env)
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        merged = conflicts(args.conflicts, Path(tmp))
    ratio = minutes["recover_agent_minutes"] / minutes["scratch_agent_minutes"]
    queue = merge_queue(args.phases, args.culprits, args.seed)
    print(f"{args.phases} phases, verify fails {model.fail_rate:.0%} of finished attempts, "
          f"{model.loss_rate:.0%} of attempts lose their machine, checkpoints every "
          f"{model.checkpoint_minutes:g} min (seed {args.seed})")  # fmt: skip
    print(f"  blind retries from scratch: {minutes['scratch_agent_minutes']:.0f} agent minutes, "
          f"{minutes['scratch_attempts']} attempts, "
          f"{minutes['scratch_lost_minutes_per_loss']:.1f} min lost per machine loss")  # fmt: skip
    print(f"  feedback and checkpoints:   {minutes['recover_agent_minutes']:.0f} agent minutes, "
          f"{minutes['recover_attempts']} attempts, "
          f"{minutes['recover_lost_minutes_per_loss']:.1f} min lost per machine loss")  # fmt: skip
    print(f"  ratio {ratio:.2f} (target at most 0.7)")
    print(f"{merged['conflicts']} conflicting pairs on a real remote: "
          f"{merged['resolved_share']:.0%} resolved with resolution, "
          f"{merged['resolved_share_without']:.0%} without")  # fmt: skip
    print(
        f"merge queue, {args.phases} phases accepted at once, {args.culprits} breaking the "
        f"integration only beside another: {queue['queue_culprits_found']} found in "
        f"{queue['queue_checks']} checks of merged states "
        f"({queue['queue_checks_per_culprit']:g} per culprit, the last one the final check)"
    )
    result = {
        "agent_minutes_ratio_vs_scratch": round(ratio, 3),
        "lost_minutes_per_machine_loss": minutes["recover_lost_minutes_per_loss"],
        "conflicts_resolved_share": merged["resolved_share"],
        "queue_checks_per_culprit": queue["queue_checks_per_culprit"],
        "checkpoint_minutes": model.checkpoint_minutes,
        **minutes,
        **merged,
        **queue,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
