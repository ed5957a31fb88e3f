"""Where a worker's Claude Code finds its credential, as its heartbeat reports it (never
the value), and how `control dispatch` reads that report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from control.health import claude_code_problem
from control.worker.checks import claude_auth
from control.worker.config import default_config
from tests.fakes.agents import API_KEY, credential_file


def test_the_credential_file_wins_over_the_environment(tmp_path: Path) -> None:
    config = default_config(tmp_path / "home", "w1")
    with_file = replace(config, credential_file=credential_file(tmp_path))
    assert claude_auth(with_file, {}) == "credential file (ANTHROPIC_API_KEY)"
    # A file without a key: the worker's own variable is dropped for the agent, as
    # child_environment does, so it does not count.
    empty = replace(config, credential_file=credential_file(tmp_path, "# none yet\n"))
    assert claude_auth(empty, {"ANTHROPIC_API_KEY": "stray"}) is None
    assert claude_auth(config, {"CLAUDE_CODE_OAUTH_TOKEN": "t"}) == (
        "environment (CLAUDE_CODE_OAUTH_TOKEN)"
    )
    assert claude_auth(config, {"ANTHROPIC_API_KEY": ""}) is None


def test_an_unreadable_credential_file_is_no_credential(tmp_path: Path) -> None:
    config = default_config(tmp_path / "home", "w1")
    loose = replace(config, credential_file=credential_file(tmp_path, mode=0o644))
    assert claude_auth(loose, {}) is None  # refused by the agent too: world-readable
    missing = replace(config, credential_file=tmp_path / "none.env")
    assert claude_auth(missing, {}) is None


def test_a_login_counts_only_unsandboxed(tmp_path: Path) -> None:
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text("{}")
    env = {"HOME": str(tmp_path)}
    config = default_config(tmp_path / "home", "w1")
    assert claude_auth(config, env) is None  # a sandboxed agent's HOME is its scratch
    trusted = replace(config, trusted_host=True)
    assert claude_auth(trusted, env) == "login (~/.claude/.credentials.json)"


def test_the_value_is_never_in_the_report(tmp_path: Path) -> None:
    config = replace(default_config(tmp_path, "w1"), credential_file=credential_file(tmp_path))
    assert API_KEY not in str(claude_auth(config, {}))


def test_what_dispatch_says_of_a_heartbeat() -> None:
    assert claude_code_problem({"claude_code": "2.1.0", "claude_auth": "environment (X)"}) is None
    assert "not installed" in str(claude_code_problem({"claude_code": None, "claude_auth": "x"}))
    missing = str(claude_code_problem({"claude_code": "2.1.0", "claude_auth": None}))
    assert "no credential" in missing and "claude_code_api_key" in missing
    assert claude_code_problem({}) is None  # an older worker that does not say: not judged
