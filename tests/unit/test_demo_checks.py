"""The demo checks its arguments, its agent and its directory before it makes anything,
and never deletes a directory it did not make (`./demo` of wherever it is run included).

Real `python -m control.demo` processes; each refusal is one line on stderr, exit 2,
and leaves the file system as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from control.demo import MARKER, path_hint, prepare_dir

FAKES = Path(__file__).resolve().parents[1] / "fakes" / "bin"


def demo(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "control.demo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SUPERAGENT_AGENT": "replay", **(env or {})},
        timeout=60,
        check=False,
    )


def _refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no traceback
    assert result.stdout == ""


def test_a_directory_the_demo_did_not_make_is_never_deleted(tmp_path: Path) -> None:
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    _refused(demo("--dir", str(mine), cwd=tmp_path), "exists and was not made by the demo")
    assert (mine / "notes.txt").read_text() == "mine\n"


def test_the_default_demo_dir_of_the_current_directory_is_safe_too(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "thesis.tex").write_text("years of work\n")
    result = demo(cwd=tmp_path)
    _refused(result, "exists and was not made by the demo")
    assert (tmp_path / "demo" / "thesis.tex").exists()


def test_the_directory_you_are_in_is_refused(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text("")
    _refused(demo("--dir", ".", cwd=tmp_path), "would replace the directory you are in")
    assert (tmp_path / MARKER).exists()


def test_an_unknown_spec_is_one_line_and_nothing_is_made(tmp_path: Path) -> None:
    _refused(demo("--spec", "nope", cwd=tmp_path), "--spec 'nope': no such example; examples:")
    assert not (tmp_path / "demo").exists()


def test_an_unknown_agent_is_refused_first(tmp_path: Path) -> None:
    result = demo(cwd=tmp_path, env={"SUPERAGENT_AGENT": "claude"})
    _refused(result, "SUPERAGENT_AGENT='claude' is not an agent backend")
    assert not (tmp_path / "demo").exists()


def test_claude_code_without_claude_on_path_says_so_before_starting(tmp_path: Path) -> None:
    env = {"SUPERAGENT_AGENT": "claude-code", "PATH": "/usr/bin:/bin", "ANTHROPIC_API_KEY": "k"}
    _refused(demo(cwd=tmp_path, env=env), "needs the `claude` command on PATH")
    assert not (tmp_path / "demo").exists()


def _claude_code_without_keys(home: Path) -> dict[str, str]:
    """The demo with Claude Code (the fake) and no key in its environment."""
    return {
        "SUPERAGENT_AGENT": "claude-code",
        "PATH": f"{FAKES}{os.pathsep}/usr/bin:/bin",
        "HOME": str(home),
        "ANTHROPIC_API_KEY": "",
        "CLAUDE_CODE_OAUTH_TOKEN": "",
        "ANTHROPIC_AUTH_TOKEN": "",
    }


def test_claude_code_without_a_credential_names_the_variables(tmp_path: Path) -> None:
    env = _claude_code_without_keys(tmp_path)
    _refused(
        demo(cwd=tmp_path, env=env),
        "needs a credential: set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN (the demo's "
        "sandboxed agents do not see a `claude /login`)",
    )
    assert not (tmp_path / "demo").exists()


def test_claude_code_with_only_a_login_is_refused_as_the_sandbox_would_not_see_it(
    tmp_path: Path,
) -> None:
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text("{}")
    env = _claude_code_without_keys(tmp_path)
    _refused(demo(cwd=tmp_path, env=env), "do not see a `claude /login`")
    assert not (tmp_path / "demo").exists()


def test_the_path_hint_names_the_control_of_this_environment() -> None:
    hint = path_hint()
    control = Path(sys.executable).parent / "control"
    assert hint == "" or (str(control) in hint and "make install" in hint)


def test_a_directory_an_earlier_demo_made_is_made_anew(tmp_path: Path) -> None:
    earlier = tmp_path / "demo"
    earlier.mkdir()
    (earlier / MARKER).write_text("")
    (earlier / "state.db").write_text("old run")
    prepare_dir(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == [MARKER]
    fresh = tmp_path / "new" / "demo"
    prepare_dir(fresh)
    assert (fresh / MARKER).is_file()
