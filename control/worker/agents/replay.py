"""The replay backend: applies recorded changes per phase, so the pipeline runs with no model.

For phase P it reads `<replay_dir>/<P>/`: `<P>.patch` or `changes.patch` is applied
with `git apply`, and a `files/` tree is copied into the checkout (no symlinks, nothing
outside the checkout, nothing under `.git`). A recording can also travel inside the
task (`replay_patch`, `replay_files` {path: text} in the agent options), so a replay
works on any worker. An optional `summary.txt` becomes the final message; an optional
`outcome.json` ({"status", "reason", "rate_limit_reset"}) makes the phase fail or be
rate-limited on purpose, for demos of the unhappy paths.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from control.process import as_cancel_check, run_watched
from control.worker.agents.base import (
    RESULT_TEXT_LIMIT,
    STATUSES,
    AgentRequest,
    AgentResult,
    excerpt,
)

NAME = "replay"
_GIT_APPLY_TIMEOUT_S = 120.0


class ReplayError(Exception):
    """A recording that cannot be replayed; its message is the result's reason."""


class ReplayCancelled(Exception):
    """The worker asked to stop while the recording was being applied."""


def _log(path: Path, line: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "a", encoding="utf-8") as handle:
        handle.write(f"# {line}\n")


def _destination(root: Path, relative: PurePosixPath | Path) -> Path:
    """Where `relative` lands in the checkout `root`, or ReplayError if it must not."""
    parts = relative.parts
    if not parts or relative.is_absolute() or ".." in parts:
        raise ReplayError(f"{relative} is not a relative path inside the checkout")
    if parts[0] == ".git":
        raise ReplayError(f"the recording writes into .git: {relative}")
    unresolved = root.joinpath(*parts)
    destination = unresolved.resolve()
    try:
        destination.relative_to(root)
    except ValueError:
        raise ReplayError(f"{relative} would land outside the checkout") from None
    if unresolved.is_symlink() or destination.is_dir():
        raise ReplayError(f"{relative} exists in the checkout and is not a file")
    return destination


def copy_tree(source: Path, checkout: Path) -> list[str]:
    """Copy every file under `source` to the same relative path in `checkout`.

    Everything is checked before anything is written, so a bad recording changes
    nothing: no symlinks or special files in the recording, no destination that
    resolves outside the checkout (through a symlink already in it), nothing in `.git`.
    """
    root = checkout.resolve()
    plan: list[tuple[Path, Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            entry = here / name
            relative = entry.relative_to(source)
            if entry.is_symlink():
                raise ReplayError(f"the recording holds a symlink: {relative}")
            if name in filenames:
                if not entry.is_file():
                    raise ReplayError(f"the recording holds a special file: {relative}")
                plan.append((entry, _destination(root, relative), str(relative)))
            elif relative.parts[0] == ".git":
                raise ReplayError(f"the recording writes into .git: {relative}")
    for entry, destination, _ in plan:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry, destination)
        shutil.copymode(entry, destination)
    return [relative for _, _, relative in plan]


def write_files(files: Mapping[str, str | bytes], checkout: Path) -> list[str]:
    """Write {relative path: bytes (or text, as UTF-8)} into `checkout`, byte for byte,
    with the checks of `copy_tree`."""
    root = checkout.resolve()
    plan = [(_destination(root, PurePosixPath(name)), name, data) for name, data in files.items()]
    for destination, _, data in plan:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return [name for _, name, _ in plan]


def _git_apply(request: AgentRequest, patch: Path) -> None:
    if request.scratch is not None:  # the sandbox sees the scratch directory, not the recording
        copy = request.scratch / f"replay-{patch.name}"
        shutil.copyfile(patch, copy)
        patch = copy
    outcome = run_watched(
        ["git", "apply", "--", str(patch.resolve())],
        cwd=request.checkout,
        env=dict(os.environ),
        log_path=request.log_path,
        wall_timeout_s=min(request.wall_timeout_s, _GIT_APPLY_TIMEOUT_S),
        wrap=request.wrap,
        cancel=request.cancel,
        log_header=[f"git apply {patch.name}"],
    )
    if outcome.cancelled:
        raise ReplayCancelled
    if outcome.exit_code != 0:
        raise ReplayError(
            f"git apply {patch.name} failed (exit {outcome.exit_code}): "
            + excerpt(outcome.stderr_tail or outcome.stdout_tail)
        )


class ReplayBackend:
    """Replays the phase's recording; see the module docstring."""

    name = NAME

    def run(self, request: AgentRequest) -> AgentResult:
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        _log(request.log_path, f"backend {NAME}, phase {request.phase_id}")
        common: dict[str, Any] = {"backend": NAME, "log_path": request.log_path}
        if as_cancel_check(request.cancel)():
            return AgentResult(status="cancelled", reason="cancelled before replaying", **common)
        try:
            return self._replay(request, common)
        except ReplayCancelled:
            _log(request.log_path, "cancelled")
            return AgentResult(status="cancelled", reason="cancelled while replaying", **common)
        except ReplayError as exc:
            _log(request.log_path, f"failed: {exc}")
            return AgentResult(status="failed", reason=str(exc), **common)

    def _replay(self, request: AgentRequest, common: dict[str, Any]) -> AgentResult:
        extra = request.options.extra
        inline_files = extra.get("replay_files") or {}
        inline_patch = extra.get("replay_patch")
        if not isinstance(inline_files, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | bytes) for k, v in inline_files.items()
        ):
            raise ReplayError("replay_files must map relative paths to their content")
        if inline_patch is not None and not isinstance(inline_patch, str | bytes):
            raise ReplayError("replay_patch must be a patch")
        phase_dir = self._phase_dir(request, required=not (inline_files or inline_patch))

        if phase_dir is not None and (forced := phase_dir / "outcome.json").is_file():
            return self._forced(forced, common)
        done: list[str] = []
        patch = None
        if phase_dir is not None:
            patch = next(
                (p for p in (phase_dir / f"{request.phase_id}.patch", phase_dir / "changes.patch")
                 if p.is_file()),
                None,
            )  # fmt: skip
            files = phase_dir / "files"
            if patch is None and not files.is_dir() and not (inline_files or inline_patch):
                raise ReplayError(
                    f"the recording {phase_dir} holds neither {request.phase_id}.patch, "
                    "changes.patch nor files/"
                )
        if patch is not None:
            _git_apply(request, patch)
            done.append(f"applied {patch.name}")
        if inline_patch:
            with tempfile.TemporaryDirectory(prefix="superagent-replay-") as tmp:
                shipped = Path(tmp) / f"{request.phase_id}.patch"
                shipped.write_bytes(
                    inline_patch if isinstance(inline_patch, bytes) else inline_patch.encode()
                )
                _git_apply(request, shipped)
            done.append("applied the shipped patch")
        if phase_dir is not None and (phase_dir / "files").is_dir():
            copied = copy_tree(phase_dir / "files", request.checkout)
            for relative in copied:
                _log(request.log_path, f"wrote {relative}")
            done.append(f"copied {len(copied)} file(s)")
        if inline_files:
            written = write_files(inline_files, request.checkout)
            for relative in written:
                _log(request.log_path, f"wrote {relative}")
            done.append(f"wrote {len(written)} shipped file(s)")

        summary_file = phase_dir / "summary.txt" if phase_dir is not None else None
        summary = (
            summary_file.read_text(encoding="utf-8")[:RESULT_TEXT_LIMIT]
            if summary_file is not None and summary_file.is_file()
            else f"replayed {request.phase_id}: " + ", ".join(done)
        )
        _log(request.log_path, "done: " + ", ".join(done))
        return AgentResult(
            status="ok", reason="replayed: " + ", ".join(done), exit_code=0,
            result_text=summary, **common,
        )  # fmt: skip

    def _phase_dir(self, request: AgentRequest, *, required: bool) -> Path | None:
        base = request.options.extra.get("replay_dir")
        if not base:
            if required:
                raise ReplayError(
                    "the replay backend needs `replay_dir`, `replay_files` or `replay_patch` "
                    "in the agent options"
                )
            return None
        replay_dir = Path(str(base))
        if not replay_dir.is_absolute():
            replay_dir = request.checkout / replay_dir
        phase_dir = replay_dir / request.phase_id
        if not phase_dir.is_dir():
            if required:
                raise ReplayError(f"no recording for phase {request.phase_id!r} in {replay_dir}")
            return None
        _log(request.log_path, f"recording {phase_dir}")
        return phase_dir

    def _forced(self, path: Path, common: dict[str, Any]) -> AgentResult:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReplayError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("status") not in STATUSES:
            raise ReplayError(f"{path} needs a status, one of {', '.join(STATUSES)}")
        reset = data.get("rate_limit_reset")
        return AgentResult(
            status=data["status"],
            reason=str(data.get("reason") or f"recorded outcome {data['status']}"),
            rate_limit_reset=float(reset) if isinstance(reset, int | float) else None,
            **common,
        )
