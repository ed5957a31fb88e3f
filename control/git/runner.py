"""git run with nothing the repository controls: the command, its environment, its
config, its timeout and its errors.

No hooks, fsmonitor, filters, sshCommand or includes: the system config is skipped, the
global one is a fixed file, the clone's own config is rewritten to a known text before
every call, and a checkout's git directory is named explicitly (never found through the
checkout's `.git`, which the agent can replace).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from control.errors import NotFoundError, UnavailableError, UsageError
from control.git.checks import display_url, validate_identity, validate_remote_url, validate_slot
from control.git.errors import GitError
from control.git.prepared import Prepared

DEFAULT_TIMEOUT_S = 600.0
_STDERR_TAIL_CHARS = 400

# What git itself may speak to a remote: never `ext::` (runs a command) or other helpers.
_ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
# From the worker's environment, only what says how to reach remotes and where the
# machine's git configuration is; never a GIT_DIR, an index or an askpass program.
_ENV_KEEP = frozenset(
    {
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_CONFIG_GLOBAL",
        "GIT_EXEC_PATH",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_HTTP_USER_AGENT",
    }
)
_CONFIG = (
    "core.hooksPath=/dev/null",  # the repository's hooks are code from the repository
    "core.fsmonitor=false",  # a program git would start on every status
    "core.untrackedCache=false",
    "protocol.ext.allow=never",  # belt and braces beside GIT_ALLOW_PROTOCOL
    "protocol.fd.allow=never",
    "core.askPass=",  # no askpass program: a missing credential fails instead of waiting
    "gc.auto=0",  # gc runs once per prepare, under the lock (see _maintain)
    "maintenance.auto=false",
    "commit.gpgSign=false",  # a signing prompt would hang a headless worker
    "rerere.enabled=false",  # a conflict is reported, never resolved from a recording
    "advice.detachedHead=false",
)


# The whole config of the shared clone; anything else in it (written by an agent on a
# trusted host, say) is replaced before the next git call.
_REPO_CONFIG = b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"


class Git:
    """git run for one remote's workspace: its paths, its identity, its timeout."""

    def __init__(
        self,
        root: Path,
        remote_url: str,
        *,
        author_name: str,
        author_email: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not timeout_s > 0:
            raise UsageError(f"the git timeout must be positive, not {timeout_s}")
        self.root = Path(root).absolute()
        self.remote_url = validate_remote_url(remote_url)
        self.author_name = validate_identity(author_name, "author name")
        self.author_email = validate_identity(author_email, "author email")
        self.timeout_s = float(timeout_s)
        self._display = display_url(self.remote_url)
        self.repo_path = self.root / "repo"  # the shared clone (bare): slots borrow its objects
        self.slots_path = self.root / "slots"

    def slot_path(self, slot: str) -> Path:
        """Where `slot`'s checkout lives."""
        return self.slots_path / validate_slot(slot)

    def _checkout(self, prepared: Prepared) -> Path:
        path = self.slot_path(prepared.slot)
        if path != prepared.path or not (path / ".git").exists():
            raise NotFoundError(
                f"slot {prepared.slot!r} has no checkout of {prepared.branch!r} (released?)"
            )
        return path

    def _rev_parse(self, cwd: Path, rev: str) -> str:
        done = self._git("rev-parse", "--verify", "--end-of-options", rev, cwd=cwd)
        return done.stdout.strip()

    def _is_ancestor(self, cwd: Path, ancestor: str, descendant: str) -> bool:
        done = self._git(
            "merge-base", "--is-ancestor", ancestor, descendant, cwd=cwd, ok_codes=(0, 1)
        )
        return done.returncode == 0

    def _env(self, checkout: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _ENV_KEEP}
        env.pop("SSH_ASKPASS", None)
        if "GIT_CONFIG_GLOBAL" not in env:
            # The machine's own file (credential helpers live there), never a path that
            # depends on a variable set later; absent HOME, none at all.
            home = env.get("HOME")
            env["GIT_CONFIG_GLOBAL"] = f"{home}/.gitconfig" if home else os.devnull
        if checkout is not None:
            # Named, never discovered: the checkout's `.git` is the agent's to replace.
            env.update(
                GIT_DIR=str(self.repo_path / "worktrees" / checkout.name),
                GIT_COMMON_DIR=str(self.repo_path),
                GIT_WORK_TREE=str(checkout),
            )
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            GIT_ALLOW_PROTOCOL=_ALLOWED_PROTOCOLS,
            GIT_AUTHOR_NAME=self.author_name,
            GIT_AUTHOR_EMAIL=self.author_email,
            GIT_COMMITTER_NAME=self.author_name,
            GIT_COMMITTER_EMAIL=self.author_email,
            LC_ALL="C",
        )
        return env

    def _git(
        self,
        *args: str,
        cwd: Path,
        stdin: str | None = None,
        ok_codes: tuple[int, ...] | None = (0,),
        index: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run git; raise GitError unless its exit code is in `ok_codes` (None: any).
        `index`: an index file of the worker's own instead of the checkout's."""
        argv = ["git"]
        for setting in _CONFIG:
            argv += ["-c", setting]
        argv += args
        self._pin_config()
        checkout = cwd if cwd.parent == self.slots_path and cwd.name != "" else None
        try:
            # Its own session: no terminal to prompt on, and a timeout kills the whole
            # group (ssh and the helpers git starts), not just git.
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self._env(checkout) | ({} if index is None else {"GIT_INDEX_FILE": str(index)}),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError:
            if not cwd.is_dir():
                raise NotFoundError(f"cannot run git in {cwd}: no such directory") from None
            raise UnavailableError("cannot run git: it is not installed (or not on PATH)") from None
        try:
            out, err = proc.communicate(
                stdin.encode() if stdin is not None else None, timeout=self.timeout_s
            )
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
            raise GitError(
                f"`git {_subcommand(args)}` timed out after {self.timeout_s:g}s"
                + (f" (remote {self._display})" if self.remote_url in args else ""),
                command=f"git {_subcommand(args)}",
            ) from None
        done = subprocess.CompletedProcess(
            argv,
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )
        if ok_codes is not None and done.returncode not in ok_codes:
            raise self._error(args, done.returncode, done.stderr or done.stdout)
        return done

    def _pin_config(self) -> None:
        """Put back the shared clone's config if anything changed it; drop per-worktree
        config files (honoured only with an extension this config never sets, but gone
        is simpler to reason about)."""
        config = self.repo_path / "config"
        try:
            current = config.read_bytes()
        except FileNotFoundError:
            return  # no clone yet: `git init` writes it
        if current != _REPO_CONFIG:
            scratch = config.with_name(".config.superagent")
            scratch.write_bytes(_REPO_CONFIG)
            os.replace(scratch, config)
        for extra in (self.repo_path / "worktrees").glob("*/config.worktree"):
            extra.unlink(missing_ok=True)

    def _error(self, args: Sequence[str], code: int, output: str, *, context: str = "") -> GitError:
        command = f"git {_subcommand(args)}"
        tail = _tail(output.replace(self.remote_url, self._display))
        where = f" ({context})" if context else ""
        if self.remote_url in args or command in ("git push", "git fetch", "git ls-remote"):
            where = f" ({context + ', ' if context else ''}remote {self._display})"
        return GitError(
            f"`{command}` failed with exit code {code}{where}: {tail or 'no output'}",
            command=command,
            stderr_tail=tail,
        )


def _subcommand(args: Sequence[str]) -> str:
    """The git subcommand in `args` (skipping `-c name=value` pairs), with its verb."""
    words = list(args)
    while len(words) >= 2 and words[0] == "-c":
        words = words[2:]
    if not words:
        return ""
    if words[0] == "worktree" and len(words) > 1:
        return f"worktree {words[1]}"
    return words[0]


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = "; ".join(lines[-3:])
    if len(joined) > _STDERR_TAIL_CHARS:
        joined = "..." + joined[-_STDERR_TAIL_CHARS:]
    return joined
