"""The shared test helpers fail loudly: a script that fails or prints no JSON is a failed test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_script_json


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "bench_x.py"
    script.write_text(body)
    return script


def test_the_last_line_is_the_figures(tmp_path: Path) -> None:
    script = _script(tmp_path, 'print("figure: 3 ms")\nprint(\'{"median_ms": 3.0}\')\n')
    assert run_script_json(script) == {"median_ms": 3.0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n", "bench_x.py exited 3"),
        ("", "bench_x.py printed nothing"),
        ("print('[1, 2]')\n", "bench_x.py's last line is not a JSON object"),
    ],
)
def test_a_failed_run_fails_with_its_output(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        run_script_json(_script(tmp_path, body))
