"""`make demo`: the main job on a built-in default, on this one machine.

Three local workers (real `control worker run` processes with their own homes),
a bare git remote seeded with the example project, and `control dispatch` of the
tiny example spec with the replay agent (or Claude Code with
SUPERAGENT_AGENT=claude-code), ending with the merged integration branch whose
verify commands pass. Everything lands in `demo/` (or --dir), made anew each time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from control.localfleet import LocalFleet, WorkerSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "specs" / "examples"
GIT_ID = ["-c", "user.name=superagent demo", "-c", "user.email=demo@superagent.local"]


def seed_remote(remote: Path, seed: Path, base: str = "main") -> None:
    """A bare repository whose `base` branch holds the files of `seed`."""
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", base, str(remote)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(seed, tmp, dirs_exist_ok=True)
        run = ["git", "-C", tmp]
        subprocess.run([*run, "init", "--quiet", "-b", base], check=True)
        subprocess.run([*run, "add", "--all"], check=True)
        subprocess.run(
            [*run, *GIT_ID, "commit", "--quiet", "-m", "seed: the example project"], check=True
        )
        subprocess.run([*run, "push", "--quiet", "--", str(remote), f"HEAD:{base}"], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="where to put it all")
    parser.add_argument("--spec", default="tiny", help="example spec name (tiny or webapp)")
    args = parser.parse_args(argv)

    root = args.dir.absolute()
    spec = EXAMPLES / f"{args.spec}.json"
    agent = os.environ.get("SUPERAGENT_AGENT", "replay")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    remote = root / "origin.git"
    seed_remote(remote, EXAMPLES / "seed" / args.spec)

    fleet = LocalFleet(
        root / "fleet",
        [
            WorkerSpec("alpha", ("linux", "docker", "gpu"), slots=2),
            WorkerSpec("beta", ("linux",)),
            WorkerSpec("gamma", ("linux", "windows-files")),
        ],
        heartbeat_seconds=2,
        lease_seconds=60,
        env={"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    fleet.create()
    print(f"starting 3 local workers under {fleet.root}/workers")
    fleet.start()
    try:
        fleet.wait_ready()
        command = [
            sys.executable,
            "-m",
            "control",
            "dispatch",
            str(spec),
            "--inventory",
            str(fleet.inventory),
            "--state",
            str(root / "state.db"),
            "--repo",
            str(remote),
            "--agent",
            agent,
            "--poll-interval",
            "0.5",
            "--heartbeat-timeout",
            "30",
            "--timeout",
            "1800",
        ]
        if agent == "replay":
            command += ["--replay-dir", str(EXAMPLES / "replay" / args.spec)]
        result = subprocess.run(command, check=False)
    finally:
        fleet.stop()
    if result.returncode != 0:
        print(f"\nthe run failed (exit {result.returncode}); worker logs: {fleet.root}/workers/*/")
        return result.returncode
    _tour(root, remote, fleet)
    return 0


def _tour(root: Path, remote: Path, fleet: LocalFleet) -> None:
    branches = subprocess.run(
        ["git", "-C", str(remote), "for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    integration = next((b for b in branches if "/integration/" in b), None)
    print("\nwhere everything is:")
    print(f"  git remote       {remote}  (branches: {', '.join(branches)})")
    print(f"  run state        {root / 'state.db'}  (control status --state {root / 'state.db'})")
    print(f"  workers          {fleet.root / 'workers'}  (inbox, checkouts, logs per worker)")
    if integration:
        log = subprocess.run(
            ["git", "-C", str(remote), "log", "--oneline", "--graph", integration],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(f"\nthe integration branch {integration}:\n{log}")


if __name__ == "__main__":
    sys.exit(main())
