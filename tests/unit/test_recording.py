"""control/recording.py and control/treetar.py on a small upstream history made here.

The history has what real ones have: modules with their own tests, a CRLF batch file,
a Latin-1 data file, an executable script, an empty release commit, and a commit that
touches a module an earlier one touched (so it depends on it).
"""

from __future__ import annotations

import io
import json
import lzma
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from control.errors import UsageError
from control.recording import (
    TEST_PREFIX,
    RecordingError,
    check,
    main,
    phase_id,
    record,
    spec_of,
)
from control.spec import load_spec
from control.treetar import import_tarball, tree_tarball

SUITE = f"{TEST_PREFIX} --doctest-modules pkg tests"
CRLF = b"@echo off\r\nset X=1\r\n"
LATIN1 = "caf\u00e9 cr\u00e8me\n".encode("latin-1")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Up Stream", "-c", "user.email=up@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit(repo: Path, message: str, files: dict[str, bytes | str | None]) -> str:
    for name, content in files.items():
        path = repo / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    commit(
        repo,
        "initial",
        {
            "LICENSE": "MIT License\n",
            "pkg/__init__.py": "",
            "pkg/a.py": 'def double(x):\n    """\n    >>> double(2)\n    4\n    """\n'
            "    return 2 * x\n",
            "pkg/b.py": "def name():\n    return 'b'\n",
            "tests/__init__.py": "",
            "tests/test_a.py": "from pkg.a import double\n\ndef test_double():\n"
            "    assert double(3) == 6\n",
            "tests/test_b.py": "from pkg.b import name\n\ndef test_name():\n"
            "    assert name() == 'b'\n",
            "run.sh": "#!/bin/sh\necho run\n",
        },
    )
    (repo / "run.sh").chmod(0o755)
    git(repo, "add", "run.sh")
    git(repo, "commit", "--quiet", "-m", "run.sh is executable")
    return repo


def grow(repo: Path) -> list[str]:
    """Four commits after the fixture's base, and an empty one; their shas."""
    return [
        commit(
            repo,
            "a: triple",
            {
                "pkg/a.py": (repo / "pkg/a.py").read_text()
                + "\ndef triple(x):\n    return 3 * x\n",
                "tests/test_a_more.py": "from pkg.a import triple\n\ndef test_triple():\n"
                "    assert triple(2) == 6\n",
            },
        ),
        commit(
            repo,
            "b: louder",
            {
                "pkg/b.py": "def name():\n    return 'B'\n",
                "tests/test_b.py": "from pkg.b import name\n\n"
                "def test_name():\n    assert name() == 'B'\n",
            },
        ),
        commit(repo, "docs: a batch file and a menu", {"docs/make.bat": CRLF, "menu.txt": LATIN1}),
        commit(repo, "release 1.0", {}),
        commit(
            repo,
            "a: quadruple",
            {"pkg/a.py": (repo / "pkg/a.py").read_text() + "\ndef quad(x):\n    return 4 * x\n"},
        ),
    ]


def test_each_commit_is_a_phase_with_its_files_dependencies_and_tests(upstream: Path) -> None:
    base = git(upstream, "rev-parse", "HEAD")
    shas = grow(upstream)
    made = record(upstream, base, "HEAD", name="up", url="https://example.com/up", package="pkg")
    phases = {c.phase: c for c in made.changes}
    assert list(phases) == ["01-a-triple", "02-b-louder", "03-docs-a-batch-file-and-a-menu",
                            "04-a-quadruple"]  # fmt: skip
    assert made.skipped == [shas[3]]  # the empty release commit has nothing to replay
    a, b, docs, again = made.changes
    assert a.verify == (
        f"{TEST_PREFIX} --doctest-modules pkg/a.py tests/test_a.py tests/test_a_more.py",
    )
    assert b.verify == (f"{TEST_PREFIX} --doctest-modules pkg/b.py tests/test_b.py",)
    assert docs.verify == (SUITE,)  # nothing it touched has tests of its own
    assert again.depends_on == ("01-a-triple",) and not b.depends_on and not docs.depends_on
    assert again.verify == a.verify  # the final check runs it once
    # The recording is upstream's patch, CR and Latin-1 bytes included.
    assert b"set X=1\r\n" in docs.patch and LATIN1.rstrip() in docs.patch
    assert made.base_tree == git(upstream, "rev-parse", f"{base}^{{tree}}")
    assert made.license_file == "LICENSE" and made.license_text == b"MIT License\n"
    spec_file = upstream.parent / "up.json"
    spec_file.write_text(json.dumps(spec_of(made)))
    spec = load_spec(spec_file)
    assert spec.phase("04-a-quadruple").depends_on == ("01-a-triple",)
    assert spec.phase("03-docs-a-batch-file-and-a-menu").deliverables == (
        "docs/make.bat",
        "menu.txt",
    )


def test_the_seed_tarball_holds_the_tree_byte_for_byte(upstream: Path, tmp_path: Path) -> None:
    grow(upstream)
    head = git(upstream, "rev-parse", "HEAD")
    tarball = tmp_path / "seed.tar.xz"
    tarball.write_bytes(tree_tarball(upstream, head))
    assert tree_tarball(upstream, head) == tarball.read_bytes()  # same tree, same bytes
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", str(bare))
    # the CRLF file, the Latin-1 file and the executable bit all survive
    assert import_tarball(bare, tarball, "main", "seed") == git(
        upstream, "rev-parse", "HEAD^{tree}"
    )


@pytest.mark.parametrize(
    ("member", "reason"),
    [("../evil", "is not a relative path"), (".git/config", "is inside .git")],
)
def test_a_tarball_that_escapes_is_refused(tmp_path: Path, member: str, reason: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(member)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    tarball = tmp_path / "bad.tar.xz"
    tarball.write_bytes(lzma.compress(buffer.getvalue()))
    git(tmp_path, "init", "--quiet", "--bare", str(tmp_path / "r.git"))
    with pytest.raises(UsageError, match=reason):
        import_tarball(tmp_path / "r.git", tarball, "main", "seed")
    not_xz = tmp_path / "plain.tar.xz"
    not_xz.write_bytes(b"not a tarball")
    with pytest.raises(UsageError, match=r"not a readable \.tar\.xz"):
        import_tarball(tmp_path / "r.git", not_xz, "main", "seed")


@pytest.mark.slow  # it runs the little suite once per phase
def test_the_recording_is_checked_and_written_only_when_it_replays(
    upstream: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = git(upstream, "rev-parse", "HEAD")
    grow(upstream)
    examples = tmp_path / "examples"
    argv = [str(upstream), base, "HEAD", "--name", "up", "--url", "https://example.com/up"]
    assert main([*argv, "--package", "pkg", "--examples", str(examples)]) == 0
    manifest = json.loads((examples / "upstream" / "up" / "upstream.json").read_text())
    assert manifest["last"]["tree"] == git(upstream, "rev-parse", "HEAD^{tree}")
    assert manifest["tests_passed"] == 4  # three tests and a doctest
    patch = examples / "replay" / "up" / "02-b-louder" / "02-b-louder.patch"
    assert (
        patch.read_bytes()
        == subprocess.run(
            ["git", "-C", str(upstream), "diff", "--binary", "--full-index", "HEAD~4", "HEAD~3"],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert (examples / "upstream" / "up" / "LICENSE").read_text() == "MIT License\n"
    assert "https://example.com/up" in (examples / "upstream" / "up" / "README.md").read_text()
    assert "4 phases, 1 empty commit(s) skipped" in capsys.readouterr().out

    # A commit that breaks its own module's tests: refused, naming it; nothing replaced.
    commit(upstream, "b: broken", {"pkg/b.py": "def name():\n    return 'oops'\n"})
    before = (examples / "up.json").read_bytes()
    assert main([*argv, "--package", "pkg", "--examples", str(examples)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 05-b-broken (") and "fails on the phase's tree" in err
    assert err.count("\n") == 1
    assert (examples / "up.json").read_bytes() == before
    assert not (examples / "replay" / "up" / "05-b-broken").exists()


def test_bad_ranges_are_refused_with_the_reason(upstream: Path, tmp_path: Path) -> None:
    base = git(upstream, "rev-parse", "HEAD")
    grow(upstream)
    kw = {"name": "up", "url": "u", "package": "pkg"}
    with pytest.raises(UsageError, match="'nope' is not a commit"):
        record(upstream, "nope", "HEAD", **kw)
    with pytest.raises(UsageError, match="no commit after"):
        record(upstream, "HEAD", "HEAD", **kw)
    with pytest.raises(UsageError, match="is not a git clone"):
        record(tmp_path, base, "HEAD", **kw)
    # a side branch merged in: its commits are not on the first-parent line
    git(upstream, "checkout", "--quiet", "-b", "side", base)
    side = commit(upstream, "side work", {"side.txt": "side\n"})
    git(upstream, "checkout", "--quiet", "main")
    git(upstream, "merge", "--quiet", "--no-ff", "--no-edit", "side")
    with pytest.raises(UsageError, match="is not on the first-parent line"):
        record(upstream, side, "HEAD", **kw)
    gone = commit(upstream, "drop the menu", {"menu.txt": None})
    with pytest.raises(RecordingError, match="only deletes files"):
        record(upstream, f"{gone}^", gone, **kw)
    unlicensed = commit(upstream, "no license", {"LICENSE": None, "pkg/b.py": "x = 1\n"})
    with pytest.raises(UsageError, match="no license file"):
        record(upstream, f"{unlicensed}^", unlicensed, **kw)


@pytest.mark.slow  # it runs the little suite once per phase
def test_the_check_refuses_a_recording_that_does_not_land_on_upstreams_tree(
    upstream: Path, tmp_path: Path
) -> None:
    base = git(upstream, "rev-parse", "HEAD")
    grow(upstream)
    made = record(upstream, base, "HEAD", name="up", url="u", package="pkg")
    made.last_tree = "0" * 40
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(RecordingError, match="do not make upstream's tree"):
        check(made, upstream, work)


def test_phase_ids_are_slugs_in_order() -> None:
    assert phase_id(3, "Fix split() maxsplit=0 handling!") == "03-fix-split-maxsplit-0-handling"
    assert phase_id(12, "!!!") == "12-commit"
    assert len(phase_id(1, "word " * 40)) <= 48


def test_the_command_refuses_a_bad_name(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "control.recording", str(tmp_path), "a", "b", "--name", "Bad!",
         "--url", "u", "--package", "p"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: --name 'Bad!'")


def test_a_range_of_empty_commits_or_a_submodule_is_refused(upstream: Path) -> None:
    base = git(upstream, "rev-parse", "HEAD")
    commit(upstream, "release 0.1", {})
    kw = {"name": "up", "url": "u", "package": "pkg"}
    with pytest.raises(UsageError, match="is empty"):
        record(upstream, base, "HEAD", **kw)
    git(upstream, "update-index", "--add", "--cacheinfo", f"160000,{base},vendored")
    git(upstream, "commit", "--quiet", "-m", "vendor a submodule")
    with pytest.raises(UsageError, match="holds a submodule at vendored"):
        tree_tarball(upstream, "HEAD")
