"""Project specs: read, check against the JSON Schema and the rules a schema cannot say.

Every problem is reported at once, each with its JSON path and what to fix, so a
user fixes a spec in one pass; a valid spec becomes a `Spec` with defaults applied.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from jsonschema import Draft202012Validator, ValidationError

from control.dag import Dag, find_cycles
from control.errors import SuperagentError, UsageError
from control.inventory import Worker
from control.jsontext import parse_json
from control.names import branch_name_problem, host_name_problem

Severity = Literal["error", "warning"]

DEFAULT_BASE_BRANCH = "main"
DEFAULT_BRANCH_PREFIX = "superagent"
DEFAULT_BACKEND = "claude-code"
DEFAULT_ESTIMATE_MINUTES = 30.0
DEFAULT_TIMEOUT_MINUTES = 120.0
DEFAULT_SILENCE_MINUTES = 15.0
# An agent attempt is expensive; one retry covers a machine lost mid-phase.
DEFAULT_MAX_ATTEMPTS = 2
# A task shorter than this many words leaves the agent guessing.
MIN_TASK_WORDS = 6

_REQUIRED_HINTS = {
    "version": 'add "version": 1',
    "name": 'name the project, e.g. "name": "shop"',
    "repo": 'say where the code lives: "repo": {"url": "git@host:team/project.git"}',
    "url": "give the clone URL every worker uses",
    "phases": "list the phases, at least one",
    "id": "give the phase a slug id such as 'api'",
    "title": "give the phase a one-line title",
    "task": 'give the agent its instruction: text, or {"file": "tasks/<id>.md"} beside the spec',
    "deliverables": "list the paths or globs the phase must leave in the repository",
    "file": "name the file that holds the task, relative to the spec",
}
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "text",
    bool: "true/false",
    int: "a number",
    float: "a number",
    type(None): "null",
}
_SCHEMA_TYPES = {
    "object": "an object",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.([A-Za-z_][A-Za-z0-9_]*)|\['((?:[^'\\]|\\.)*)'\]")


class InvalidSpecError(SuperagentError):
    """The spec breaks the contract; `control validate` lists every problem."""


@dataclass(frozen=True)
class Issue:
    """One problem found in a spec, where it is, and how bad."""

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "path": self.path, "message": self.message}


@dataclass(frozen=True)
class AgentOptions:
    """How the agent runs for one phase: the defaults merged with the phase's own."""

    backend: str = DEFAULT_BACKEND
    command: tuple[str, ...] = ()
    model: str | None = None
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str | None = None
    max_turns: int | None = None
    max_budget_usd: float | None = None


@dataclass(frozen=True)
class Repo:
    url: str
    base_branch: str = DEFAULT_BASE_BRANCH
    branch_prefix: str = DEFAULT_BRANCH_PREFIX


@dataclass(frozen=True)
class Phase:
    """One phase with every default applied and its task text read from its file."""

    id: str
    title: str
    task: str
    deliverables: tuple[str, ...]
    branch: str
    verify: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    worker: str | None = None
    task_file: str | None = None
    estimate_minutes: float = DEFAULT_ESTIMATE_MINUTES
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
    silence_minutes: float = DEFAULT_SILENCE_MINUTES
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    agent: AgentOptions = field(default_factory=AgentOptions)


@dataclass(frozen=True)
class Spec:
    """A validated spec: the only form of a spec the rest of superagent accepts."""

    name: str
    repo: Repo
    phases: tuple[Phase, ...]
    description: str = ""
    path: Path | None = None

    @cached_property
    def by_id(self) -> dict[str, Phase]:
        return {p.id: p for p in self.phases}

    def phase(self, phase_id: str) -> Phase:
        try:
            return self.by_id[phase_id]
        except KeyError:
            raise UsageError(f"spec {self.name!r} has no phase {phase_id!r}") from None

    def dag(self) -> Dag:
        return Dag(
            {p.id: p.depends_on for p in self.phases},
            {p.id: p.estimate_minutes for p in self.phases},
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = None if self.path is None else str(self.path)
        return data


@dataclass
class Report:
    """What `validate` found: errors, warnings, and the spec itself when there is no error."""

    issues: list[Issue]
    spec: Spec | None = None
    inventory_checked: bool = False

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    def ok(self, strict: bool = False) -> bool:
        return not self.errors and not (strict and self.warnings)

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {
            "valid": self.ok(strict),
            "strict": strict,
            "errors": [i.to_dict() for i in self.errors],
            "warnings": [i.to_dict() for i in self.warnings],
            "inventory_checked": self.inventory_checked,
            "phases": 0 if self.spec is None else len(self.spec.phases),
        }


@functools.cache
def schema() -> dict[str, Any]:
    """The JSON Schema of a spec, as shipped inside the package."""
    text = resources.files("control").joinpath("schema/spec.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator() -> Draft202012Validator:
    # References resolved once, up front: resolving `$ref` per phase was a third of
    # the time of validating a thousand phases. The schema has no recursion.
    defs = schema()["$defs"]

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref", "")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = inline(defs[ref.removeprefix("#/$defs/")])
            return {**target, **{k: inline(v) for k, v in node.items() if k != "$ref"}}
        return {k: inline(v) for k, v in node.items()}

    return Draft202012Validator(inline(schema()))


def read_spec_file(path: str | Path) -> Any:
    """The parsed JSON of a spec file; UsageError when it is not a readable JSON file."""
    source = Path(path)
    if source.is_dir():
        raise UsageError(f"{source}: is a directory, not a spec file")
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{source}: no such spec file") from None
    except OSError as exc:
        raise UsageError(f"{source}: cannot read the spec ({exc.strerror})") from exc
    return parse_json(raw, str(source), "spec")


def check_file(path: str | Path, workers: Sequence[Worker] | None = None) -> Report:
    """Read and check a spec file; task files are looked up beside it."""
    source = Path(path)
    return check_document(read_spec_file(source), source.parent, workers, source)


def load_spec(path: str | Path, workers: Sequence[Worker] | None = None) -> Spec:
    """The valid spec at `path`, or InvalidSpecError naming the first of its errors."""
    report = check_file(path, workers)
    if report.spec is None:
        errors = report.errors
        more = f" (and {len(errors) - 1} more; `control validate` lists them)" if errors[1:] else ""
        raise InvalidSpecError(f"{path}: invalid spec: {errors[0]}{more}")
    return report.spec


def check_document(
    document: Any,
    base_dir: Path | None = None,
    workers: Sequence[Worker] | None = None,
    path: Path | None = None,
) -> Report:
    """Every schema and semantic problem of a parsed spec, in document order.

    `base_dir` is where task files are looked up (None: task files are refused);
    `workers`, when given, is the fleet that requirements and pins are checked against.
    """
    issues = list(_schema_issues(document))
    checker = _Checker(document, base_dir, workers)
    if isinstance(document, dict):
        checker.run()
    issues.extend(checker.issues)
    issues = _dedupe(issues)
    issues.sort(key=lambda i: (i.severity != "error", _path_key(i.path)))
    report = Report(issues, inventory_checked=workers is not None)
    if not report.errors:
        report.spec = checker.build(path)
    return report


# --- schema errors, in words --------------------------------------------------------------


def _schema_issues(document: Any) -> Iterator[Issue]:
    for error in _validator().iter_errors(document):
        yield from _translate(error)


def _translate(error: ValidationError) -> Iterator[Issue]:  # noqa: PLR0911, PLR0912
    path = error.json_path
    value: Any = error.instance
    expected: Any = error.validator_value
    keyword = error.validator
    subschema = error.schema if isinstance(error.schema, dict) else {}
    hint = subschema.get("description", "")
    if keyword == "required":
        for name in expected:
            if isinstance(value, dict) and name not in value:
                what = _REQUIRED_HINTS.get(name, "")
                yield Issue(_child(path, name), f"required field is missing: {what}".rstrip(": "))
        return
    if keyword == "additionalProperties":
        known = sorted(subschema.get("properties", {}))
        for name in value:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
            yield Issue(_child(path, name), f"unknown field {name!r}; {fix}")
        return
    if keyword == "anyOf":  # the task: text or {"file": ...}
        if isinstance(value, dict):
            for sub in error.context or []:
                if sub.schema_path and sub.schema_path[0] == 1:
                    yield from _translate(sub)
            return
        if isinstance(value, str):
            yield Issue(path, "the task is empty: " + _REQUIRED_HINTS["task"])
            return
        yield Issue(path, f"expected text or an object, got {_json_type(value)}: {hint}")
        return
    if keyword == "type":
        wanted = expected
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        expected = " or ".join(_SCHEMA_TYPES.get(n, n) for n in names)
        yield Issue(path, f"expected {expected}, got {_json_type(value)}")
        return
    if keyword in ("minLength", "minItems") and not value:
        yield Issue(path, f"must not be empty: {hint}".rstrip(": "))
        return
    if keyword == "pattern" and isinstance(value, str) and not value.strip():
        yield Issue(path, "must not be blank")
        return
    if keyword == "pattern":
        yield Issue(path, f"{value!r} is not allowed: {hint}".rstrip(": "))
        return
    if keyword == "maxLength":
        limit = expected
        yield Issue(path, f"too long: {len(value)} characters, at most {limit}")
        return
    if keyword == "enum":
        choices = ", ".join(str(c) for c in expected)
        yield Issue(path, f"{value!r} is not one of: {choices}")
        return
    if keyword == "const":
        yield Issue(path, f"unsupported value {value!r}: {hint}")
        return
    if keyword == "uniqueItems":
        twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
        yield Issue(path, f"{twice!r} is listed twice")
        return
    bounds = {
        "exclusiveMinimum": "more than",
        "minimum": "at least",
        "maximum": "at most",
        "exclusiveMaximum": "less than",
    }
    if keyword in bounds:
        yield Issue(path, f"must be {bounds[keyword]} {expected}, got {value!r}")
        return
    yield Issue(path, error.message)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def _path_key(path: str) -> tuple[tuple[int, int, str], ...]:
    """Sort paths in document order: `$.phases[2]` before `$.phases[10]`."""
    return tuple(
        (0, int(index), "")
        if index
        else (1, _field_order().get(name or quoted, 1000), name or quoted)
        for index, name, quoted in _PATH_TOKEN.findall(path)
    )


@functools.cache
def _field_order() -> dict[str, int]:
    """Fields sort in the order the schema (and a spec) lists them, not alphabetically."""
    order: dict[str, int] = {}
    sections = [schema(), *(schema()["$defs"][d] for d in ("repo", "task_file", "phase"))]
    for section in sections:
        for name in section.get("properties", {}):
            order.setdefault(name, len(order))
    return order


def _is_slug(value: Any) -> bool:
    return isinstance(value, str) and _SLUG.fullmatch(value) is not None


def _dedupe(issues: list[Issue]) -> list[Issue]:
    return list(dict.fromkeys(issues))


# --- the rules a schema cannot say ---------------------------------------------------------


def deliverable_problem(path: str, root: str = "the repository") -> str | None:
    """Why a relative path or glob cannot name a file inside `root`, or None.

    The answer reads after the quoted path: "'../x' escapes the repository ...".
    """
    if "\\" in path:
        return f"uses '\\'; use '/' as the separator, relative to {root}"
    if path.startswith(("/", "~")) or re.match(r"[A-Za-z]:", path):
        return f"is absolute; give it relative to {root}"
    depth = 0
    for part in PurePosixPath(path).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return f"escapes {root} with '..'; give a path inside it"
    if depth == 0:
        return f"is {root} itself; name a file in it"
    return None


class _Checker:
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
        self._check_branch_collisions()
        self._check_cycles(phases, ids)

    def _check_repo(self) -> str | None:
        """Check the base branch and prefix; return the prefix when phase branches may use it."""
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
                self.error(f"{where}.task", "the task is blank: " + _REQUIRED_HINTS["task"])
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
        fleet = "; ".join(f"{w.name}: {', '.join(sorted(w.capabilities)) or '-'}" for w in workers)
        missing = False
        for i, label in enumerate(needed):
            if not any(label in w.capabilities for w in workers):
                missing = True
                self.error(
                    f"{where}.requires[{i}]",
                    f"no worker of the inventory has capability {label!r} (workers: {fleet}); "
                    "add it to a worker's superagent_capabilities or drop the requirement",
                )
        if not missing and needed and not any(w.capabilities.issuperset(needed) for w in workers):
            self.error(
                f"{where}.requires",
                f"no single worker has all of {', '.join(needed)} (workers: {fleet})",
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
                    max_attempts=int(pick("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                    agent=AgentOptions(
                        backend=agent.get("backend", DEFAULT_BACKEND),
                        command=tuple(agent.get("command", ())),
                        model=agent.get("model"),
                        allowed_tools=tuple(agent.get("allowed_tools", ())),
                        permission_mode=agent.get("permission_mode"),
                        max_turns=agent.get("max_turns"),
                        max_budget_usd=agent.get("max_budget_usd"),
                    ),
                )
            )
        return Spec(doc["name"], repo, tuple(phases), doc.get("description", ""), path)
