"""A recording written out as an example: the spec, the recordings, the seed, and the
upstream's license with an attribution; staged first, so a failure leaves the old one."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from control.recording.model import Recording


def spec_of(recording: Recording) -> dict[str, Any]:
    """The spec: one phase per change, the commit message as its task."""
    phases = []
    for change in recording.changes:
        phase: dict[str, Any] = {
            "id": change.phase,
            "title": f"{change.commit[:7]} {change.subject}"[:200],
            "task": f"{change.message}\n\n(upstream commit {change.commit} by {change.author}, "
            f"{change.date})",
            "deliverables": list(change.present),
            "verify": list(change.verify),
        }
        if change.depends_on:
            phase["depends_on"] = list(change.depends_on)
        phases.append(phase)
    return {
        "$schema": "../schema/spec.schema.json",
        "version": 1,
        "name": recording.name,
        "description": (
            f"{len(recording.changes)} consecutive commits of {recording.url}, one phase each "
            f"({recording.base[:12]}..{recording.last[:12]}); replayed from "
            f"replay/{recording.name}/, see upstream/{recording.name}/README.md"
        ),
        "repo": {
            "url": f"git@git.example.com:upstream/{recording.name}.git",
            "base_branch": "main",
            "branch_prefix": "superagent",
        },
        "defaults": {"estimate_minutes": 1, "timeout_minutes": 10, "max_attempts": 2},
        "phases": phases,
    }


def manifest_of(recording: Recording) -> dict[str, Any]:
    """upstream.json: where it came from, and the trees a replay must land on."""
    return {
        "project": recording.name,
        "url": recording.url,
        "license_file": recording.license_file,
        "base": {"commit": recording.base, "tree": recording.base_tree},
        "last": {"commit": recording.last, "tree": recording.last_tree},
        "test_command": recording.test_command,
        "tests_passed": recording.tests_passed,
        "phases": [{"id": c.phase, "commit": c.commit, "tree": c.tree} for c in recording.changes],
        "skipped_empty_commits": recording.skipped,
    }


def attribution(recording: Recording) -> str:
    first, count = recording.changes[0], len(recording.changes)
    return (
        f"# {recording.name}: a replay example from upstream history\n\n"
        f"The spec `../../{recording.name}.json`, the recordings `../../replay/{recording.name}/`"
        f" and the seed `../../seed/{recording.name}.tar.xz` are made from {recording.url}:\n"
        f"its tree at `{recording.base}` (the seed) and its {count} first-parent commits from "
        f"`{first.commit}` to `{recording.last}`, each one phase whose recording is the "
        "upstream patch, byte for byte. The upstream code is the work of its authors, under "
        f"the license in `{recording.license_file}` here (copied from upstream at "
        f"`{recording.last[:12]}`); each phase's task names its commit and author.\n\n"
        "Made by `control/recording/` from a local clone; to make it again (see "
        'docs/specs.md, "A replay example from a project\'s history"):\n\n'
        "```\n"
        f".venv/bin/python -m control.recording CLONE {recording.base[:12]} "
        f"{recording.last[:12]} --name {recording.name} --url {recording.url} "
        f"--package {recording.package}\n"
        "```\n"
    )


def write(recording: Recording, examples: Path) -> list[Path]:
    """Write the example under `examples`, replacing an earlier one of the same name;
    everything is staged beside its destination first, so a failure leaves the old one."""
    name = recording.name
    targets: dict[Path, str | bytes | Mapping[str, Any]] = {
        examples / f"{name}.json": json.dumps(spec_of(recording), indent=2) + "\n",
        examples / "seed" / f"{name}.tar.xz": recording.seed,
        examples / "replay" / name: {
            c.phase: {
                f"{c.phase}.patch": c.patch,
                "summary.txt": f"replayed upstream {c.commit[:12]} by {c.author}: {c.subject}\n",
            }
            for c in recording.changes
        },
        examples / "upstream" / name: {
            recording.license_file: recording.license_text,
            "README.md": attribution(recording),
            "upstream.json": json.dumps(manifest_of(recording), indent=2) + "\n",
        },
    }
    staged: list[tuple[Path, Path]] = []
    try:
        for target, content in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            _write_into(stage / "x", content)
            staged.append((stage / "x", target))
        for source, target in staged:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            source.rename(target)
    finally:
        for source, _ in staged:
            shutil.rmtree(source.parent, ignore_errors=True)
    return list(targets)


def _write_into(path: Path, content: str | bytes | Mapping[str, Any]) -> None:
    if isinstance(content, Mapping):
        path.mkdir()
        for key, value in content.items():
            _write_into(path / key, value)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
