"""Project specs: read, check against the JSON Schema and the rules a schema cannot say.

Every problem is reported at once, each with its JSON path and what to fix, so a
user fixes a spec in one pass; a valid spec becomes a `Spec` with defaults applied.
The package has one module per job: `model` (the validated spec), `schema_errors`
(the schema and its errors in words), `rules` (the other checks, and the builder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from control.errors import UsageError
from control.inventory import Worker
from control.jsontext import parse_json
from control.messages.agent import AGENT_BACKENDS, DEFAULT_BACKEND, AgentOptions
from control.spec.model import (
    DEFAULT_BASE_BRANCH,
    DEFAULT_BRANCH_PREFIX,
    DEFAULT_ESTIMATE_MINUTES,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_SILENCE_MINUTES,
    DEFAULT_TIMEOUT_MINUTES,
    MIN_TASK_WORDS,
    InvalidSpecError,
    Issue,
    Phase,
    Repo,
    Report,
    Severity,
    Spec,
)
from control.spec.rules import Checker, deliverable_problem
from control.spec.schema_errors import path_key, schema, schema_issues

__all__ = [
    "AGENT_BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_BASE_BRANCH",
    "DEFAULT_BRANCH_PREFIX",
    "DEFAULT_ESTIMATE_MINUTES",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_SILENCE_MINUTES",
    "DEFAULT_TIMEOUT_MINUTES",
    "MIN_TASK_WORDS",
    "AgentOptions",
    "InvalidSpecError",
    "Issue",
    "Phase",
    "Repo",
    "Report",
    "Severity",
    "Spec",
    "check_document",
    "check_file",
    "deliverable_problem",
    "load_spec",
    "read_spec_file",
    "schema",
]


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
    if source.suffix.lower() in (".yml", ".yaml"):
        raise UsageError(f"{source}: specs are JSON, not YAML; write it as a .json file")
    try:
        document = parse_json(raw, str(source), "spec", unique_keys=True)
    except UsageError as exc:
        if "is not JSON" in str(exc) and _looks_like_yaml(raw):
            raise UsageError(f"{exc}; specs are JSON, and this looks like YAML") from None
        raise
    if _depth(document) > MAX_DEPTH:
        raise UsageError(
            f"{source}: the spec is nested more than {MAX_DEPTH} levels deep; "
            "a valid spec is at most 6"
        )
    return document


# A valid spec is at most 6 levels deep ($.phases[0].agent.allowed_tools[0]); past this
# the schema's validator would exhaust Python's recursion before saying anything useful.
MAX_DEPTH = 32


def _depth(document: Any) -> int:
    """How deeply lists and objects nest in `document` (MAX_DEPTH + 1 for anything deeper),
    without recursion: one level at a time, carrying only the containers to the next,
    since a 10,000-phase spec holds hundreds of thousands of strings and numbers."""
    depth = 0
    level = [document] if isinstance(document, dict | list) else []
    while level and depth <= MAX_DEPTH:
        depth += 1
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return depth


def _looks_like_yaml(raw: bytes) -> bool:
    import yaml  # noqa: PLC0415  only on this error path

    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return False
    return isinstance(parsed, dict)


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
    issues = list(schema_issues(document))
    checker = Checker(document, base_dir, workers)
    if isinstance(document, dict):
        checker.run()
    issues.extend(checker.issues)
    issues = list(dict.fromkeys(issues))
    issues.sort(key=lambda i: (i.severity != "error", path_key(i.path)))
    report = Report(issues, inventory_checked=workers is not None)
    if not report.errors:
        report.spec = checker.build(path)
    return report
