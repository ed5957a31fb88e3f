"""`control worker check`: is this machine fit to take work?

Node, Claude Code, superagent and every other agent CLI pinned on this host (codex,
gemini, opencode) must be exactly the pinned versions, git must
run, the inbox must open and the work and log directories must be writable. A
task that passes on one machine and fails on another because of a different Node
is the failure this prevents: a mismatched worker refuses work and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from control import __version__
from control.errors import SuperagentError
from control.queue import Queue
from control.worker.agents.base import load_credentials
from control.worker.agents.claude_code import AUTH_VARIABLES
from control.worker.config import OTHER_AGENTS, WorkerConfig
from control.worker.sandbox import sandbox_for

_TIMEOUT_S = 30.0


@dataclass
class CheckReport:
    versions: dict[str, str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str | None:
        return "; ".join(self.problems) or None


def _version_of(argv: list[str], word: int = 0) -> tuple[str | None, str | None]:
    """(version text, error) from `argv`: a word of the first line (the first by
    default: `v20.18.1`, `9.8.7 (Claude Code)`), minus a leading 'v'."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        return None, f"{argv[0]} not found"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{argv[0]} --version failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return None, f"{argv[0]} --version exited {done.returncode}: {tail[0][:200]}"
    lines = done.stdout.strip().splitlines()
    words = lines[0].split() if lines else []
    if len(words) <= word:
        return None, f"{argv[0]} --version printed nothing"
    return words[word].removeprefix("v"), None


def _compare(report: CheckReport, name: str, found: str | None, error: str | None,
             pin: str | None) -> None:  # fmt: skip
    report.versions[name] = found
    if pin is None:
        return
    if error is not None:
        report.problems.append(f"{name} is pinned to {pin} but {error}")
    elif found != pin.removeprefix("v"):
        report.problems.append(f"{name} is {found}, pinned {pin.removeprefix('v')}")


def _writable(directory: Path) -> str | None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as exc:
        return f"{directory} is not writable ({exc.strerror})"
    return None


Fingerprint = tuple[tuple[str, int, int, int] | None, ...]


def installed(config: WorkerConfig) -> Fingerprint:
    """What is installed where the pinned tools are found: each one's real path, inode,
    size and mtime. Cheap (a few stats), so the daemon can ask on every wake and run the
    checks again as soon as someone installs another Node or Claude Code under it."""

    def one(executable: str) -> tuple[str, int, int, int] | None:
        found = shutil.which(executable)
        if found is None:
            return None
        real = os.path.realpath(found)
        try:
            st = os.stat(real)
        except OSError:
            return None
        return real, st.st_ino, st.st_size, st.st_mtime_ns

    executables = (config.node, config.claude, *(getattr(config, a) for a in OTHER_AGENTS))
    return tuple(one(executable) for executable in executables)


# Each other agent CLI: how `--version` answers ("codex-cli 0.169.0": the second word).
_AGENT_VERSION_WORD = {"codex": 1, "gemini": 0, "opencode": 0}


def run_checks(config: WorkerConfig) -> CheckReport:
    """Every check, all reported at once (never stops at the first problem)."""
    report = CheckReport()
    _compare(report, "node", *_version_of([config.node, "--version"]), config.pins.node)
    _compare(
        report, "claude_code", *_version_of([config.claude, "--version"]), config.pins.claude_code
    )
    for name, word in _AGENT_VERSION_WORD.items():
        # Pinned (installed here by the role), it must answer at its pin, or no work comes;
        # unpinned, it is reported when found: the scheduler sends a phase only to a worker
        # that reports its agent (None: not installed here).
        pin = getattr(config.pins, name)
        _compare(report, name, *_version_of([getattr(config, name), "--version"], word), pin)
    # Not a reason to refuse work (other agents need none), but `control dispatch` refuses
    # to send Claude Code phases to a worker that reports none.
    report.versions["claude_auth"] = claude_auth(config)
    _compare(report, "superagent", __version__, None, config.pins.superagent)
    git, git_error = _version_of(["git", "--version"], word=2)  # "git version 2.39.5"
    report.versions["git"] = git
    if git_error:
        report.problems.append(git_error)
    try:
        Queue(config.queue_db, create=False).close()
    except SuperagentError as exc:
        report.problems.append(f"inbox: {exc}")
    for directory in (config.work_dir, config.logs_dir):
        if problem := _writable(directory):
            report.problems.append(problem)
    _check_sandbox(report, config)
    return report


def claude_auth(config: WorkerConfig, env: dict[str, str] | None = None) -> str | None:
    """Where Claude Code run by this worker finds a credential, never the value: its
    credential file (which wins over the environment), the worker's environment, or a
    `claude /login` in the worker's home (seen only unsandboxed: a sandboxed agent's
    HOME is its scratch directory). None when there is none."""
    env = dict(os.environ) if env is None else env
    if config.credential_file is not None:
        try:
            creds = load_credentials(config.credential_file)
        except SuperagentError:
            creds = {}
        env = {k: v for k, v in env.items() if k not in AUTH_VARIABLES} | creds
        source = "credential file"
    else:
        source = "environment"
    named = [name for name in AUTH_VARIABLES if env.get(name)]
    if named:
        return f"{source} ({named[0]})"
    login = Path(env.get("HOME") or Path.home()) / ".claude" / ".credentials.json"
    if config.trusted_host and login.is_file():
        return "login (~/.claude/.credentials.json)"
    return None


def _check_sandbox(report: CheckReport, config: WorkerConfig) -> None:
    """Phases run sandboxed, or the host is trusted by the inventory; never silently neither."""
    if config.trusted_host:
        report.versions["sandbox"] = "none (trusted host)"
        return
    try:
        sandbox = sandbox_for(config)
    except SuperagentError as exc:
        report.versions["sandbox"] = None
        report.problems.append(
            f"{exc}; phases run only sandboxed unless the inventory marks this host "
            "trusted (superagent_trusted_host: true)"
        )
        return
    report.versions["sandbox"] = "bubblewrap" if sandbox is not None else None
