#!/usr/bin/python
"""The Ansible module behind the ansible transport: one `control queue rpc` on the worker.

Why not `ansible.builtin.command`: that module is AnsiballZ-wrapped, and the worker's
Python spends most of a third of a second importing Ansible's module_utils before it
runs anything; on a fan-out that is most of the CPU per host. This file is a
"JSON args" module instead (Ansible writes the call's arguments into the source
where the marker below is, and pipelines the source to the worker's Python on
stdin): standard library only, nothing of Ansible's, nothing written to the worker's
disk. It reads `argv` (the worker's `control queue rpc ...`, no shell) and `stdin`
(the base64 request, never in any argv), runs the one, feeds it the other, and
answers `answer` (the rpc's stdout), or `failed` with its exit code and stderr.

When `control` is a console script of the very Python running this module (the
worker's `ansible_python_interpreter` is its venv's), it runs here, as that Python
would run it, rather than in a second Python: one interpreter start per host, not two.

It echoes none of its arguments back (`command` echoes them all as `invocation`), so
the request is not in the result Ansible and ansible-runner pass around.

The arguments are JSON in a raw triple-quoted string: JSON escapes every quote
inside its strings, so three quotes in a row never occur in it, and it ends with `}`.
It runs on the worker's own Python (3.7 or later), not the orchestrator's.

Every host of a fan-out starts a Python for it, so what it imports is paid once per
host: `subprocess` and `traceback` are imported only where they are used, and a script
is run with `compile` and `exec` rather than `runpy` (whose `pkgutil` and `importlib.util`
cost more than the rest of this module). The process lives for one call and makes no
garbage worth collecting: the cyclic collector, which ran a dozen times during the
rpc's imports, is off from the first line, and the process ends with `os._exit` once
its answer is written.
"""

from __future__ import annotations

import gc

gc.disable()

import io  # noqa: E402  after the collector is off: these imports are what it scanned
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    args = json.loads(r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>""")
    argv = [str(part) for part in args["argv"]]
    request = str(args["stdin"]).encode("ascii")
    result: dict[str, object]
    try:
        rc, out, err = run_here(argv, request) if ours(argv[0]) else run(argv, request)
    except OSError as exc:
        result = {"failed": True, "rc": 127, "msg": f"cannot run {argv[0]}: {exc}"}
    else:
        result = {"answer": out} if rc == 0 else {"failed": True, "rc": rc, "stderr": err}
    result["changed"] = False
    sys.stdout.write(json.dumps(result))


def ours(program: str) -> bool:
    """Whether `program` is a Python script of this interpreter and environment (a
    console script of the venv this Python runs in): its `#!` names this binary, in
    this environment's bin directory."""
    try:
        with open(program, "rb") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    interpreter = os.fsdecode(first[2:].strip())
    return (
        os.path.isabs(interpreter)
        and os.path.dirname(os.path.dirname(interpreter)) == sys.prefix
        and os.path.realpath(interpreter) == os.path.realpath(sys.executable)
    )


def run(argv: list[str], request: bytes) -> tuple[int, str, str]:
    import subprocess  # noqa: PLC0415  only here: most hosts run the rpc in this process

    done = subprocess.run(argv, input=request, capture_output=True, check=False)
    decoded = (done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))
    return done.returncode, decoded[0], decoded[1]


def run_here(argv: list[str], request: bytes) -> tuple[int, str, str]:
    """`argv` run in this process as Python runs a script: its argv, the request on
    stdin, its own directory first on sys.path (not the module's working directory),
    its code run as `__main__` with its own file name."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
    sys.stdin = io.TextIOWrapper(io.BytesIO(request), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    rc = 0
    try:
        with open(argv[0], "rb") as source:
            # dont_inherit: none of this module's `__future__` imports leak into the script.
            code = compile(source.read(), argv[0], "exec", dont_inherit=True)
        # Its code run as `__main__` in globals of its own, as `runpy.run_path` runs a
        # script file: the program `ours` accepted, the one a second Python would run.
        exec(code, {"__name__": "__main__", "__file__": argv[0], "__builtins__": __builtins__})  # noqa: S102
    except SystemExit as exc:
        rc = exit_code(exc.code, err)
    except BaseException:  # as Python reports an uncaught exception: traceback, exit 1
        import traceback  # noqa: PLC0415  only for a crash: its imports cost every call

        traceback.print_exc(file=err)
        rc = 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return rc, out.getvalue(), err.getvalue()


def exit_code(code: object, err: io.StringIO) -> int:
    """The exit status `sys.exit(code)` gives a process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err.write(f"{code}\n")
    return 1


if __name__ == "__main__":
    main()
    # The answer is written and the rpc has closed its inbox: nothing is left to flush or
    # close. The interpreter's own ending (a last full collection, every module the rpc
    # imported torn down) would cost each host more than this module's imports do.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
