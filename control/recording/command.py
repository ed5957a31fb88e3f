"""`python -m control.recording CLONE BASE LAST --name NAME`: record, check, write."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from control.errors import SuperagentError, UsageError
from control.recording.example import write
from control.recording.history import record
from control.recording.replay import check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "specs" / "examples"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m control.recording",
        description="Make a replay example (spec, recordings, seed) from a local clone's history.",
    )
    parser.add_argument("clone", type=Path, help="a local git clone of the project")
    parser.add_argument("base", help="the commit the seed is made of (not replayed)")
    parser.add_argument("last", help="the last commit replayed (first-parent line from base)")
    parser.add_argument("--name", required=True, help="the example's name (spec, directories)")
    parser.add_argument("--url", required=True, help="the upstream URL, for the attribution")
    parser.add_argument("--package", required=True, help="the package directory (boltons)")
    parser.add_argument("--tests", default="tests", help="the test directory (tests)")
    parser.add_argument("--examples", type=Path, default=EXAMPLES, help="where to write it")
    args = parser.parse_args(argv)
    try:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", args.name):
            raise UsageError(f"--name {args.name!r}: lowercase letters, digits and '-'")
        recording = record(
            args.clone.resolve(),
            args.base,
            args.last,
            name=args.name,
            url=args.url,
            package=args.package,
            tests=args.tests,
        )
        with tempfile.TemporaryDirectory(prefix="superagent-recording-") as tmp:
            check(recording, args.clone.resolve(), Path(tmp))
        written = write(recording, args.examples)
    except SuperagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    for path in written:
        print(f"wrote {path}")
    print(
        f"{len(recording.changes)} phases, {len(recording.skipped)} empty commit(s) skipped; "
        f"the merged tree is upstream's {recording.last_tree[:12]}, "
        f"{recording.tests_passed} upstream tests pass on it"
    )
    return 0
