"""`make demo`: the main job on a built-in default, on this one machine.

Three local workers shaped like `inventory/example` (real `control worker run`
processes with their own homes), a bare git remote seeded with the example project,
and `control dispatch` of the tiny example spec with the replay agent (or Claude Code
with SUPERAGENT_AGENT=claude-code), ending with the merged integration branch whose
verify commands pass. Everything lands in `demo/` (or --dir). Arguments, the agent and
the directory are checked before anything is made; a directory is only ever deleted
when an earlier demo made it (it holds the demo's marker file).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from control.errors import UsageError
from control.localfleet import LocalFleet, WorkerShape
from control.spec import AGENT_BACKENDS
from control.treetar import import_tarball
from control.worker.agents.claude_code import AUTH_VARIABLES, DEFAULT_EXECUTABLE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "specs" / "examples"
GIT_ID = ["-c", "user.name=superagent demo", "-c", "user.email=demo@superagent.local"]
MARKER = ".superagent-demo"
# The machines of inventory/example: a server (docker, a GPU, two slots), a laptop,
# and a WSL box that alone can handle Windows files.
EXAMPLE_WORKERS = (
    WorkerShape("server", ("linux", "docker", "gpu"), slots=2),
    WorkerShape("laptop", ("linux",)),
    WorkerShape("wsl", ("linux", "windows-files")),
)


def example_specs() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.json"))


def example_fleet(
    root: Path,
    *,
    env: Mapping[str, str] | None = None,
    heartbeat_seconds: float = 2.0,
    lease_seconds: float = 60.0,
) -> LocalFleet:
    """The three example workers under `root`, created (not started); `control` on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    fleet = LocalFleet(
        root,
        EXAMPLE_WORKERS,
        heartbeat_seconds=heartbeat_seconds,
        lease_seconds=lease_seconds,
        env={"PATH": path, **(env or {})},
    )
    fleet.create()
    return fleet


def seed_of(name: str) -> Path:
    """An example's seed: the directory seed/<name>/, or the tarball seed/<name>.tar.xz
    (an upstream tree whose bytes must stay exactly as they are)."""
    tarball = EXAMPLES / "seed" / f"{name}.tar.xz"
    return tarball if tarball.is_file() else EXAMPLES / "seed" / name


def seed_remote(remote: Path, seed: Path, base: str = "main") -> None:
    """A bare repository whose `base` branch holds the files of `seed` (a directory, or
    a .tar.xz committed byte for byte)."""
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", base, str(remote)], check=True)
    if seed.name.endswith(".tar.xz"):
        import_tarball(remote, seed, base, "seed: the example project")
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(seed, tmp, dirs_exist_ok=True)
        run = ["git", "-C", tmp]
        subprocess.run([*run, "init", "--quiet", "-b", base], check=True)
        subprocess.run([*run, "add", "--all"], check=True)
        subprocess.run(
            [*run, *GIT_ID, "commit", "--quiet", "-m", "seed: the example project"], check=True
        )
        subprocess.run([*run, "push", "--quiet", "--", str(remote), f"HEAD:{base}"], check=True)


def check_agent(agent: str, env: Mapping[str, str]) -> None:
    """Refuse, before anything starts, an agent that cannot run here, saying what is missing."""
    if agent not in AGENT_BACKENDS:
        raise UsageError(
            f"SUPERAGENT_AGENT={agent!r} is not an agent backend; known: "
            f"{', '.join(AGENT_BACKENDS)}"
        )
    if agent != "claude-code":
        return
    if shutil.which(DEFAULT_EXECUTABLE, path=env.get("PATH")) is None:
        raise UsageError(
            f"SUPERAGENT_AGENT=claude-code needs the `{DEFAULT_EXECUTABLE}` command on PATH "
            "(install Claude Code: `npm install -g @anthropic-ai/claude-code`)"
        )
    # The demo's agents run sandboxed, with a HOME of their own: a `claude /login` in
    # yours is not seen there, only a variable the workers inherit.
    if not any(env.get(name) for name in AUTH_VARIABLES):
        raise UsageError(
            "SUPERAGENT_AGENT=claude-code needs a credential: set "
            f"{' or '.join(AUTH_VARIABLES[:2])} (the demo's sandboxed agents do not see a "
            "`claude /login`)"
        )


def prepare_dir(root: Path) -> None:
    """Make `root` the demo's, empty: refuse any directory an earlier demo did not make."""
    here = Path.cwd().resolve()
    if root.resolve() in (here, *here.parents):
        raise UsageError(f"--dir {root}: that would replace the directory you are in")
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise UsageError(f"--dir {root}: exists and is not a directory")
    if root.exists():
        if (root / MARKER).is_file():
            shutil.rmtree(root)  # an earlier demo's: made anew
        elif any(root.iterdir()):
            raise UsageError(
                f"--dir {root}: exists and was not made by the demo; "
                "give another --dir, or empty it"
            )
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(
        "Made by `python -m control.demo`, which replaces this directory on its next run.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="where to put it all")
    parser.add_argument(
        "--spec", default="tiny", help=f"example spec name ({', '.join(example_specs())})"
    )
    args = parser.parse_args(argv)
    agent = os.environ.get("SUPERAGENT_AGENT", "replay")
    root = args.dir.absolute()
    try:
        if args.spec not in example_specs():
            raise UsageError(
                f"--spec {args.spec!r}: no such example; examples: {', '.join(example_specs())}"
            )
        check_agent(agent, os.environ)
        prepare_dir(root)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return _run(root, args.spec, agent)


def _run(root: Path, spec_name: str, agent: str) -> int:
    spec = EXAMPLES / f"{spec_name}.json"
    remote = root / "origin.git"
    seed_remote(remote, seed_of(spec_name))
    fleet = example_fleet(root / "fleet")
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
            command += ["--replay-dir", str(EXAMPLES / "replay" / spec_name)]
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
    state = root / "state.db"
    print("\nwhere everything is:")
    print(f"  git remote       {remote}  (branches: {', '.join(branches)})")
    print(f"  run state        {state}")
    print(f"  workers          {fleet.root / 'workers'}  (inbox, checkouts, logs per worker)")
    print("\nlook at the run:")
    for command in ("runs", "status"):
        print(f"  control {command} --state {state}")
    if integration:
        log = subprocess.run(
            ["git", "-C", str(remote), "log", "--oneline", "--graph", integration],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(f"\nthe integration branch {integration}:\n{log}")
    print(path_hint())


def path_hint() -> str:
    """How to get `control` on PATH, when it is not there already."""
    control = Path(sys.executable).parent / "control"
    found = shutil.which("control")
    if found is not None and Path(found).resolve() == control.resolve():
        return ""
    return (
        f"`control` is {control}: put it on PATH with `. {control.parent}/activate` "
        "(this shell) or `make install` (a link in ~/.local/bin)"
    )


if __name__ == "__main__":
    sys.exit(main())
