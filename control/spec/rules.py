"""The rules a JSON Schema cannot say, and the `Spec` built once they all hold.

The checker walks a parsed spec defensively (the schema may already have found it
malformed): task files, deliverable paths, dependencies, branches, cycles, and the
fleet's capabilities and pins when an inventory is given.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from control.dag import find_cycles
from control.inventory import Worker
from control.messages.agent import DEFAULT_BACKEND, AgentOptions
from control.names import (
    branch_name_problem,
    host_name_problem,
    remote_url_problem,
    repo_url_problem,
)
from control.spec.model import (
    DEFAULT_BASE_BRANCH,
    DEFAULT_BRANCH_PREFIX,
    DEFAULT_CHECKPOINT_MINUTES,
    DEFAULT_ESTIMATE_MINUTES,
    DEFAULT_FEEDBACK_ROUNDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_SILENCE_MINUTES,
    DEFAULT_TIMEOUT_MINUTES,
    MIN_TASK_WORDS,
    Issue,
    Phase,
    Repo,
    Spec,
)
from control.spec.schema_errors import REQUIRED_HINTS

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DRIVE = re.compile(r"[A-Za-z]:")
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _is_slug(value: Any) -> bool:
    return isinstance(value, str) and _SLUG.fullmatch(value) is not None


def deliverable_problem(path: str, root: str = "the repository") -> str | None:
    """Why a relative path or glob cannot name a file inside `root`, or None.

    The answer reads after the quoted path: "'../x' escapes the repository ...".
    """
    if "\\" in path:
        return f"uses '\\'; use '/' as the separator, relative to {root}"
    if path.startswith(("/", "~")) or _DRIVE.match(path):
        return f"is absolute; give it relative to {root}"
    depth = 0
    for part in path.split("/"):  # PurePosixPath's parts, without its cost per path
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return f"escapes {root} with '..'; give a path inside it"
    if depth == 0:
        return f"is {root} itself; name a file in it"
    return None


class Checker:
    """Walks a parsed spec defensively: the schema may already have found it malformed."""

    def __init__(
        self, document: Any, base_dir: Path | None, workers: Sequence[Worker] | None
    ) -> None:
        self.doc: dict[str, Any] = document if isinstance(document, dict) else {}
        self.base_dir = base_dir
        self.workers = None if workers is None else list(workers)
        self.issues: list[Issue] = []
        self.tasks: dict[int, tuple[str, str | None]] = {}  # phase index -> (text, file)
        self.branches: dict[int, tuple[str, str]] = {}  # phase index -> (branch, its path)

    def error(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message, "error"))

    def warn(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message, "warning"))

    @property
    def defaults(self) -> dict[str, Any]:
        value = self.doc.get("defaults")
        return value if isinstance(value, dict) else {}

    @property
    def repo(self) -> dict[str, Any]:
        value = self.doc.get("repo")
        return value if isinstance(value, dict) else {}

    def phases(self) -> list[tuple[int, dict[str, Any]]]:
        value = self.doc.get("phases")
        if not isinstance(value, list):
            return []
        return [(i, p) for i, p in enumerate(value) if isinstance(p, dict)]

    def run(self) -> None:
        prefix = self._check_repo()
        phases = self.phases()
        ids = self._check_ids(phases)
        for index, phase in phases:
            where = f"$.phases[{index}]"
            self._check_task(where, index, phase)
            self._check_deliverables(where, phase)
            self._check_depends_on(where, phase, ids)
            first = ids.get(str(phase.get("id"))) == index  # a duplicate gets no default branch
            self._check_branch(where, index, phase, prefix if first else None)
            self._check_verify(where, phase)
            if self.workers is not None:
                self._check_fleet(where, phase)
        self._check_session_pattern("$.defaults.agent", self.defaults.get("agent"))
        for index, phase in phases:
            self._check_session_pattern(f"$.phases[{index}].agent", phase.get("agent"))
        self._check_branch_collisions()
        self._check_cycles(phases, ids)
        self._check_budgets(phases)
        self._check_fallbacks(phases)

    def _check_fallbacks(self, phases: list[tuple[int, dict[str, Any]]]) -> None:
        """A fallback that is the phase's own agent would never take anything over."""
        said: set[str] = set()
        for index, phase in phases:
            agent = {**_dict(self.defaults.get("agent")), **_dict(phase.get("agent"))}
            own = agent.get("backend", DEFAULT_BACKEND)
            fallbacks = agent.get("fallback")
            if not isinstance(fallbacks, list):
                continue
            where = "agent" if "fallback" in _dict(phase.get("agent")) else None
            base = f"$.phases[{index}].agent" if where else "$.defaults.agent"
            for position, entry in enumerate(fallbacks):
                path = f"{base}.fallback[{position}].backend"
                if isinstance(entry, dict) and entry.get("backend") == own and path not in said:
                    said.add(path)
                    self.error(
                        path,
                        f"{own!r} is the phase's own agent; a fallback must be another one",
                    )

    def _phase_cap(self, phase: dict[str, Any]) -> Any:
        agent = {**_dict(self.defaults.get("agent")), **_dict(phase.get("agent"))}
        return phase.get("budget_usd", self.defaults.get("budget_usd", agent.get("max_budget_usd")))

    def _check_budgets(self, phases: list[tuple[int, dict[str, Any]]]) -> None:
        """A phase whose cap is over the run's budget could never be dispatched; one with
        no cap under a run budget reserves all that is left, so it runs alone."""
        budget = self.doc.get("budget_usd")
        if not _is_amount(budget):
            return
        for index, phase in phases:
            cap = self._phase_cap(phase)
            if _is_amount(cap) and cap > budget:
                self.error(
                    f"$.phases[{index}].budget_usd",
                    f"the phase's cap ${cap:g} is more than the run's budget_usd ${budget:g}; "
                    "it could never be dispatched",
                )
            elif cap is None:
                self.warn(
                    f"$.phases[{index}]",
                    "no budget_usd (nor agent max_budget_usd) under the run's budget_usd: each "
                    "attempt reserves all that is left of the budget, so it runs alone",
                )

    def _check_session_pattern(self, where: str, agent: Any) -> None:
        """The command backend finds a session id with it: it must compile, with a group."""
        pattern = agent.get("session_pattern") if isinstance(agent, dict) else None
        if not isinstance(pattern, str):
            return
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            self.error(f"{where}.session_pattern", f"not a regular expression: {exc}")
            return
        if groups < 1:
            self.error(f"{where}.session_pattern", "needs a group, (...), around the session id")

    def _check_repo(self) -> str | None:
        """Check the URL, base branch and prefix; return the prefix when branches may use it."""
        url = self.repo.get("url")
        if not isinstance(url, str) or not url.strip() or url.startswith("-"):
            pass  # the schema has said why
        elif problem := remote_url_problem(url, relative_ok=True):
            self.error("$.repo.url", f"the remote URL is refused: {problem}")
        elif problem := repo_url_problem(url):
            self.error("$.repo.url", f"{url!r} {problem}")
        for key, default in (
            ("base_branch", DEFAULT_BASE_BRANCH),
            ("branch_prefix", DEFAULT_BRANCH_PREFIX),
        ):
            value = self.repo.get(key, default)
            if isinstance(value, str) and value and (problem := branch_name_problem(value)):
                self.error(f"$.repo.{key}", f"{value!r} is not a valid git branch name: {problem}")
        prefix = self.repo.get("branch_prefix", DEFAULT_BRANCH_PREFIX)
        if not isinstance(prefix, str) or not prefix or branch_name_problem(prefix):
            return None
        return prefix

    def _check_ids(self, phases: list[tuple[int, dict[str, Any]]]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for index, phase in phases:
            phase_id = phase.get("id")
            if not isinstance(phase_id, str):
                continue
            if phase_id in ids:
                self.error(
                    f"$.phases[{index}].id",
                    f"duplicate id {phase_id!r} (first at $.phases[{ids[phase_id]}]); "
                    "phase ids must be unique",
                )
            else:
                ids[phase_id] = index
        return ids

    def _check_task(self, where: str, index: int, phase: dict[str, Any]) -> None:
        task = phase.get("task")
        text: str | None = None
        file_name: str | None = None
        if isinstance(task, str):
            text = task
            if task and not task.strip():
                self.error(f"{where}.task", "the task is blank: " + REQUIRED_HINTS["task"])
                return
        elif isinstance(task, dict) and isinstance(task.get("file"), str) and task["file"]:
            file_name = task["file"]
            text = self._read_task_file(f"{where}.task.file", file_name)
        if text is None or not text.strip():
            return
        self.tasks[index] = (text, file_name)
        words = len(text.split())
        if words < MIN_TASK_WORDS:
            self.warn(
                f"{where}.task",
                f"the task has only {words} word{'s' if words != 1 else ''}; say what to build, "
                "where, and how to know it is done",
            )

    def _read_task_file(self, where: str, name: str) -> str | None:
        if self.base_dir is None:
            self.error(where, "a task file needs the spec to be a file (it is read beside it)")
            return None
        if problem := deliverable_problem(name, "the spec's directory"):
            self.error(where, f"{name!r} {problem}")
            return None
        path = self.base_dir / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reasons = {
                FileNotFoundError: f"no such task file {name!r} beside the spec ({path})",
                IsADirectoryError: f"{name!r} is a directory; name the file that holds the task",
                UnicodeDecodeError: f"the task file {name!r} is not UTF-8 text",
            }
            strerror = getattr(exc, "strerror", None) or exc
            self.error(where, reasons.get(type(exc), f"cannot read task file {name!r}: {strerror}"))
            return None
        if not text.strip():
            self.error(where, f"the task file {name!r} is empty; write the agent's instruction")
            return None
        return text

    def _check_deliverables(self, where: str, phase: dict[str, Any]) -> None:
        deliverables = phase.get("deliverables")
        if not isinstance(deliverables, list):
            return
        for i, item in enumerate(deliverables):
            if isinstance(item, str) and item and (problem := deliverable_problem(item)):
                self.error(f"{where}.deliverables[{i}]", f"{item!r} {problem}")

    def _check_depends_on(self, where: str, phase: dict[str, Any], ids: Mapping[str, int]) -> None:
        depends_on = phase.get("depends_on")
        if not isinstance(depends_on, list):
            return
        for i, dep in enumerate(depends_on):
            if isinstance(dep, str) and dep not in ids:
                close = difflib.get_close_matches(dep, list(ids), n=1)
                fix = f"did you mean {close[0]!r}?" if close else "no phase has this id"
                self.error(f"{where}.depends_on[{i}]", f"unknown phase {dep!r}; {fix}")

    def _check_branch(
        self, where: str, index: int, phase: dict[str, Any], prefix: str | None
    ) -> None:
        branch = phase.get("branch")
        if isinstance(branch, str) and branch:
            if problem := branch_name_problem(branch):
                self.error(
                    f"{where}.branch", f"{branch!r} is not a valid git branch name: {problem}"
                )
                return
            self.branches[index] = (branch, f"{where}.branch")
        elif branch is None and prefix is not None and _is_slug(phase.get("id")):
            self.branches[index] = (f"{prefix}/{phase['id']}", f"{where}.id")

    def _check_verify(self, where: str, phase: dict[str, Any]) -> None:
        verify = phase.get("verify", self.defaults.get("verify", []))
        if isinstance(verify, list) and not verify:
            self.warn(
                f"{where}.verify",
                "no verify command: only the deliverables' existence is checked; add a command "
                "that proves the phase works (tests, a build, a lint)",
            )

    def _check_fleet(self, where: str, phase: dict[str, Any]) -> None:
        workers = self.workers or []
        requires = phase.get("requires", [])
        needed = (
            [r for r in requires if isinstance(r, str) and _CAPABILITY.fullmatch(r)]
            if isinstance(requires, list)
            else []
        )
        missing = False
        for i, label in enumerate(needed):
            if not any(label in w.capabilities for w in workers):
                missing = True
                self.error(
                    f"{where}.requires[{i}]",
                    f"no worker of the inventory has capability {label!r} "
                    f"(workers: {_fleet_text(workers)}); "
                    "add it to a worker's superagent_capabilities or drop the requirement",
                )
        if not missing and needed and not any(w.capabilities.issuperset(needed) for w in workers):
            self.error(
                f"{where}.requires",
                f"no single worker has all of {', '.join(needed)} "
                f"(workers: {_fleet_text(workers)})",
            )
        pin = phase.get("worker")
        if not isinstance(pin, str) or host_name_problem(pin):
            return  # the schema has said why
        names = [w.name for w in workers]
        by_name = {w.name: w for w in workers}
        if pin not in by_name:
            close = difflib.get_close_matches(pin, names, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"workers: {', '.join(names)}"
            self.error(f"{where}.worker", f"no worker {pin!r} in the inventory; {fix}")
        elif lacking := sorted(set(needed) - by_name[pin].capabilities):
            self.error(
                f"{where}.worker",
                f"the phase is pinned to {pin!r}, which lacks {', '.join(lacking)} (required)",
            )

    def _check_branch_collisions(self) -> None:
        """Two phases on one branch, or `a` beside `a/b`, which git cannot store together."""
        base = self.repo.get("base_branch", DEFAULT_BASE_BRANCH)
        owner: dict[str, int] = {}
        for index, (branch, where) in sorted(self.branches.items()):
            if branch == base:
                self.error(where, f"branch {branch!r} is the base branch; give the phase its own")
            elif branch in owner:
                self.error(
                    where,
                    f"branch {branch!r} is also the branch of $.phases[{owner[branch]}]; "
                    "each phase needs its own branch",
                )
            else:
                owner[branch] = index
        holders = {b: f"$.phases[{i}]" for b, i in owner.items()}
        if isinstance(base, str):
            holders.setdefault(base, "the base branch")
        for branch, index in owner.items():
            parts = branch.split("/")
            above = next(
                (
                    a
                    for a in ("/".join(parts[:cut]) for cut in range(1, len(parts)))
                    if a in holders
                ),
                None,
            )
            if above is not None:
                self.error(
                    self.branches[index][1],
                    f"branch {branch!r} cannot coexist with branch {above!r} of {holders[above]} "
                    "(git stores branches as files: one cannot be a directory of the other)",
                )

    def _check_cycles(
        self, phases: list[tuple[int, dict[str, Any]]], ids: Mapping[str, int]
    ) -> None:
        graph: dict[str, list[str]] = {}
        for index, phase in phases:
            phase_id = phase.get("id")
            if not isinstance(phase_id, str) or ids.get(phase_id) != index:
                continue
            deps = phase.get("depends_on", [])
            graph[phase_id] = (
                [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
            )
        for cycle in find_cycles(graph):
            self.error(
                f"$.phases[{ids[cycle[0]]}].depends_on",
                f"dependency cycle: {' -> '.join(cycle)} (each phase depends on the next); "
                "remove one of these dependencies",
            )

    def build(self, path: Path | None) -> Spec:
        """The Spec, with defaults applied: call only when no error was found."""
        doc = self.doc
        repo = Repo(
            url=doc["repo"]["url"],
            base_branch=self.repo.get("base_branch", DEFAULT_BASE_BRANCH),
            branch_prefix=self.repo.get("branch_prefix", DEFAULT_BRANCH_PREFIX),
        )
        defaults = self.defaults
        phases = []
        for index, raw in self.phases():
            text, task_file = self.tasks[index]

            def pick(key: str, fallback: Any, raw: dict[str, Any] = raw) -> Any:
                return raw.get(key, defaults.get(key, fallback))

            agent = {**defaults.get("agent", {}), **raw.get("agent", {})}
            phases.append(
                Phase(
                    id=raw["id"],
                    title=raw["title"],
                    task=text,
                    task_file=task_file,
                    deliverables=tuple(raw["deliverables"]),
                    branch=self.branches[index][0],
                    verify=tuple(pick("verify", [])),
                    depends_on=tuple(raw.get("depends_on", [])),
                    requires=tuple(raw.get("requires", [])),
                    worker=raw.get("worker"),
                    estimate_minutes=float(pick("estimate_minutes", DEFAULT_ESTIMATE_MINUTES)),
                    timeout_minutes=float(pick("timeout_minutes", DEFAULT_TIMEOUT_MINUTES)),
                    silence_minutes=float(pick("silence_minutes", DEFAULT_SILENCE_MINUTES)),
                    verify_network=bool(pick("verify_network", True)),
                    max_attempts=int(pick("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                    feedback_rounds=int(pick("feedback_rounds", DEFAULT_FEEDBACK_ROUNDS)),
                    checkpoint_minutes=float(
                        pick("checkpoint_minutes", DEFAULT_CHECKPOINT_MINUTES)
                    ),
                    agent=AgentOptions(
                        backend=agent.get("backend", DEFAULT_BACKEND),
                        command=tuple(agent.get("command", ())),
                        model=agent.get("model"),
                        allowed_tools=tuple(agent.get("allowed_tools", ())),
                        permission_mode=agent.get("permission_mode"),
                        max_turns=agent.get("max_turns"),
                        max_budget_usd=agent.get("max_budget_usd"),
                        resume_command=tuple(agent.get("resume_command", ())),
                        session_pattern=agent.get("session_pattern"),
                        fallback=tuple(
                            (f["backend"], f.get("model")) for f in agent.get("fallback", ())
                        ),
                    ),
                    budget_usd=self._phase_cap(raw),
                    estimate_usd=pick("estimate_usd", None),
                )
            )
        return Spec(
            doc["name"], repo, tuple(phases), doc.get("description", ""), path,
            budget_usd=doc.get("budget_usd"),
            burn_rate_usd_per_hour=doc.get("burn_rate_usd_per_hour"),
            resolve_conflicts=bool(doc.get("resolve_conflicts", True)),
            merge_queue=bool(doc.get("merge_queue", True)),
        )  # fmt: skip


def _fleet_text(workers: Sequence[Worker]) -> str:
    """The fleet's capabilities for an error message: made only when there is one (it was
    made for every phase of every spec checked against an inventory)."""
    return "; ".join(f"{w.name}: {', '.join(sorted(w.capabilities)) or '-'}" for w in workers)
