"""The phases' branches: only the orchestrator moves one, to its phase's accepted
commit; one found moved anyway (a stale worker of an older superagent, a person) is
put back from that commit before anything is built on it or merged from it."""

from __future__ import annotations

from collections.abc import Iterable

from control.orchestrator.base import Base


class Branches(Base):
    """Keeping each done phase's branch at the commit the run accepted."""

    def repair_branches(self, phases: Iterable[str] | None = None) -> list[str]:
        """Point the branch of each done phase (of `phases`, or of every one) back at its
        accepted commit where something moved it, from the accepted attempt's own ref
        (which no other attempt writes): a phase building on it, a check of the merge
        queue and the final merge then get what the run accepted instead of failing on
        a branch that no longer holds it. One `ls-remote` reads every branch asked
        about. Raises SuperagentError while the remote cannot be read or written (the
        caller tries again later). Returns the phases repaired."""
        wanted = None if phases is None else set(phases)
        done = {
            phase_id: row
            for phase_id, row in self.store.phases(self.run_id).items()
            if row.state == "done" and row.commit_sha and (wanted is None or phase_id in wanted)
        }
        if not done:
            return []
        heads = self.git.remote_heads([row.branch for row in done.values()])
        repaired = []
        for phase_id, row in done.items():
            if row.commit_sha is None or heads.get(row.branch) == row.commit_sha:
                continue
            accepted = next(
                (
                    a
                    for a in self.store.attempts(self.run_id, phase_id)
                    if a.attempt == row.attempt and a.state == "done" and a.push_ref
                ),
                None,
            )
            if accepted is None or accepted.push_ref is None:
                continue  # accepted before attempts had their own refs: nothing to take it from
            self.git.promote(accepted.push_ref, row.commit_sha, row.branch)
            self._say("branch_repaired", phase=phase_id, commit=row.commit_sha)
            repaired.append(phase_id)
        return repaired
