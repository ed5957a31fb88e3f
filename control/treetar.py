"""A git tree as a .tar.xz and back, byte for byte: an upstream project's seed.

`tree_tarball` packs a commit's tree deterministically (same tree, same bytes);
`import_tarball` commits a tarball's files with `git fast-import`, so no work tree,
attribute or end-of-line conversion sits between the tarball's bytes and the blobs:
the commit's tree hash is the packed tree's.
"""

from __future__ import annotations

import io
import lzma
import re
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from control.errors import SuperagentError, UsageError

_GIT_TIMEOUT_S = 300.0


class TreeTarError(SuperagentError):
    """git could not read the tree or write the commit; the message says which command."""


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=data,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TreeTarError(f"git {args[0]} in {repo} timed out") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TreeTarError(f"git {args[0]} in {repo}: {lines[-1] if lines else 'failed'}")
    return done.stdout


def tree_entries(repo: Path, rev: str) -> list[tuple[str, str, str, str]]:
    """(mode, type, sha, path) of every entry of `rev`'s tree, recursively."""
    entries = []
    for record in _git(repo, "ls-tree", "-r", "-z", "--full-tree", rev).split(b"\0"):
        if record:
            meta, path = record.split(b"\t", 1)
            mode, kind, sha = meta.decode().split()
            entries.append((mode, kind, sha, path.decode("utf-8", "surrogateescape")))
    return entries


def tree_tarball(repo: Path, rev: str) -> bytes:
    """`rev`'s tree as a .tar.xz: files 0644 or 0755, symlinks, the commit's time on all."""
    stamp = int(_git(repo, "show", "-s", "--format=%ct", rev).decode().strip())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for mode, kind, sha, path in tree_entries(repo, rev):
            if kind != "blob":
                raise UsageError(f"{rev[:12]} holds a submodule at {path}; not supported")
            data = _git(repo, "cat-file", "blob", sha)
            info = tarfile.TarInfo(path)
            info.mtime = stamp
            info.uname = info.gname = ""
            if mode == "120000":
                info.type = tarfile.SYMTYPE
                info.linkname = data.decode("utf-8", "surrogateescape")
                tar.addfile(info)
            else:
                info.mode = 0o755 if mode == "100755" else 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME)


def _quote(path: str) -> str:
    """A path as fast-import reads it: C-style quoted when it must be."""
    if not re.search(r'[\x00-\x1f"\\]', path):
        return path
    escaped = "".join(
        {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}.get(c, c)
        if ord(c) >= 0x20 or c in "\n\t"
        else f"\\{ord(c):03o}"
        for c in path
    )
    return f'"{escaped}"'


def import_tarball(repo: Path, tarball: Path, branch: str, message: str) -> str:
    """Commit the files of `tarball` as `branch` of `repo` (bare or not) and return the
    commit's tree; UsageError names a tarball that is not one, or an entry that escapes."""
    stream = io.BytesIO()
    stream.write(f"commit refs/heads/{branch}\n".encode())
    stream.write(b"committer superagent <superagent@superagent.local> 315532800 +0000\n")
    stream.write(f"data {len(message.encode())}\n{message}\n".encode())
    try:
        with tarfile.open(tarball, mode="r:xz") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or not path.parts:
                    raise UsageError(f"{tarball}: {member.name!r} is not a relative path")
                if path.parts[0] == ".git":
                    raise UsageError(f"{tarball}: {member.name!r} is inside .git")
                if member.isdir():
                    continue
                if member.issym():
                    mode, data = "120000", member.linkname.encode("utf-8", "surrogateescape")
                elif member.isfile():
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    mode = "100755" if member.mode & 0o100 else "100644"
                else:
                    raise UsageError(f"{tarball}: {member.name!r} is not a file or a symlink")
                stream.write(f"M {mode} inline {_quote(path.as_posix())}\n".encode())
                stream.write(f"data {len(data)}\n".encode() + data + b"\n")
    except (OSError, tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise UsageError(f"{tarball}: not a readable .tar.xz ({exc})") from exc
    _git(repo, "fast-import", "--quiet", data=stream.getvalue())
    return _git(repo, "rev-parse", f"refs/heads/{branch}^{{tree}}").decode().strip()
