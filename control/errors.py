"""The one error type the library raises, and the exit code each kind maps to.

The library never prints and never exits: it raises a subclass of
`SuperagentError`; the CLI catches it once, prints `error: <message>` and exits
with the subclass's named code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the `control` command, documented in `control --help`."""

    OK = 0
    FAILURE = 1  # the thing asked for ran and failed (a run with dead phases, an invalid spec)
    USAGE = 2  # bad input: arguments, JSON, a spec that is not a file
    NOT_FOUND = 3  # a database, message or phase that does not exist
    CONFLICT = 4  # a stale fence, a reused idempotency key, a state that forbids the change
    UNAVAILABLE = 5  # the environment refuses: network filesystem, schema from the future, busy
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM (kill, systemd stop)


class SuperagentError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(SuperagentError):
    """The caller's input is malformed (bad JSON, a missing file, an invalid name)."""

    exit_code = ExitCode.USAGE


class NotFoundError(SuperagentError):
    """A database, message, run or phase that does not exist."""

    exit_code = ExitCode.NOT_FOUND


class ConflictError(SuperagentError):
    """The request contradicts the stored state (stale fence, key reused with other content)."""

    exit_code = ExitCode.CONFLICT


class DrainedError(ConflictError):
    """The inbox is drained: it takes no new task (asked for by the orchestrator, whose
    dispatch must not leave work where it will not be claimed)."""


class UnavailableError(SuperagentError):
    """The environment cannot serve the request (network filesystem, newer schema, busy)."""

    exit_code = ExitCode.UNAVAILABLE


def missing_extra(exc: ModuleNotFoundError, what: str) -> UnavailableError:
    """A module of the orchestrator's extra is not installed (a worker's install has
    none of them): say which, and how to get it."""
    return UnavailableError(
        f"{what} needs {exc.name or 'a module'} (part of the orchestrator's extra): "
        "pip install 'superagent[orchestrator]'"
    )
