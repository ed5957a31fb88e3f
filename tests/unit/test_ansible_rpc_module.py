"""control_queue_rpc, the module the ansible transport runs, built by Ansible's own module
builder and run by a real Python as a worker would run it (its source on stdin)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from control import rpc
from control.queue import Queue
from control.transport.runner import LIBRARY
from tests.injection import corpus
from tests.support import need

CONTROL = Path(sys.executable).parent / "control"


def built(args: dict[str, Any]) -> Any:
    """What Ansible pipelines to the worker's Python for these arguments."""
    from ansible.executor.module_common import modify_module  # noqa: PLC0415
    from ansible.parsing.dataloader import DataLoader  # noqa: PLC0415
    from ansible.template import Templar  # noqa: PLC0415

    return modify_module(
        module_name="control_queue_rpc",
        module_path=str(LIBRARY / "control_queue_rpc.py"),
        module_args={**args, "_ansible_no_log": False, "_ansible_check_mode": False},
        templar=Templar(loader=DataLoader()),
        task_vars={"ansible_python_interpreter": sys.executable},
    )


def run(args: dict[str, Any]) -> dict[str, Any]:
    return run_with_pid(args)[0]


def run_with_pid(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The module's result, and the pid of the Python that ran it."""
    module = built(args)
    # Buffered, as a worker's Python writes to Ansible's pipe (this environment may say not).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with subprocess.Popen(
        [sys.executable], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/", env=env
    ) as python:
        stdout, _ = python.communicate(module.b_module_data, timeout=60)
    assert python.returncode == 0
    result: dict[str, Any] = json.loads(stdout)
    return result, python.pid


def script(path: Path, interpreter: str, body: str) -> Path:
    path.write_text(f"#!{interpreter}\n{body}")
    path.chmod(0o755)
    return path


def test_ansible_pipelines_it_and_it_imports_nothing_of_ansible() -> None:
    module = built({"argv": ["/bin/true"], "stdin": ""})
    # "new" style: pipelined on the interpreter's stdin, no file on the worker.
    assert module.module_style == "new"
    assert module.shebang == f"#!{sys.executable}"
    tree = ast.parse(module.b_module_data)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {str(n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    # Not AnsiballZ: the standard library only, nothing of Ansible's.
    assert imported <= {"__future__", "gc", "io", "json", "os", "subprocess", "sys",
                        "traceback"}  # fmt: skip


def test_the_request_reaches_the_rpc_on_stdin_and_is_not_echoed(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    Queue(db).close()
    canary = tmp_path / "canary"
    payload = {"texts": corpus(canary), "quotes": '"""' + "'''" + "\\"}
    request = {"op": "enqueue", "payload": payload, "key": "run/p/1"}
    result = run({"argv": [str(CONTROL), "queue", "rpc", "--db", str(db), "--base64"],
                  "stdin": rpc.encode(request)})  # fmt: skip
    assert json.loads(result["answer"])["state"] == "pending"
    assert result["changed"] is False and "failed" not in result
    assert rpc.encode(request) not in json.dumps(result)  # no `invocation` echo
    with Queue(db) as q:
        assert [m.payload for m in q.messages()] == [payload]
    assert not canary.exists()


def test_an_rpc_that_fails_answers_failed_with_its_exit_and_stderr(tmp_path: Path) -> None:
    result = run({"argv": [str(CONTROL), "queue", "rpc", "--db", str(tmp_path / "none.db"),
                           "--base64"], "stdin": rpc.encode({"op": "ping"})})  # fmt: skip
    assert result["failed"] is True
    assert result["rc"] != 0
    assert "none.db" in result["stderr"]


def test_a_program_that_is_not_there_answers_failed(tmp_path: Path) -> None:
    result = run({"argv": [str(tmp_path / "no-control"), "queue", "rpc"], "stdin": ""})
    assert result["failed"] is True and result["rc"] == 127
    assert result["msg"].startswith(f"cannot run {tmp_path / 'no-control'}: ")


def test_a_console_script_of_this_python_runs_in_its_process(tmp_path: Path) -> None:
    # As the worker's `control` when ansible_python_interpreter is its venv's Python:
    # no second interpreter; argv, stdin and sys.path[0] as Python gives a script.
    here = script(tmp_path / "here", sys.executable,
                  "import os, sys\nprint(os.getpid(), sys.argv[1:], sys.stdin.read(), "
                  "sys.path[0])\n")  # fmt: skip
    result, pid = run_with_pid({"argv": [str(here), "a b", "$HOME"], "stdin": "cmVx"})
    assert result["answer"].split() == [str(pid), "['a", "b',", "'$HOME']", "cmVx", str(tmp_path)]


def test_an_answer_small_or_larger_than_a_pipe_reaches_ansible_whole(tmp_path: Path) -> None:
    # The module ends with os._exit once it has written its answer: nothing may be lost.
    for size in (10, 3_000_000):
        text = script(tmp_path / "text", sys.executable, f"print('x' * {size})\n")
        assert run({"argv": [str(text)], "stdin": ""})["answer"] == "x" * size + "\n"


def test_any_other_program_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    shell = script(tmp_path / "shell", "/bin/sh", 'echo "$PPID $1"; cat\n')
    result, pid = run_with_pid({"argv": [str(shell), "x y"], "stdin": "cmVx"})
    assert result["answer"] == f"{pid} x y\ncmVx"
    # The same Python binary outside this environment (a venv's base) is another Python.
    base = str(Path(sys.executable).resolve())
    need(base != sys.executable and sys.prefix != sys.base_prefix, "not in a venv")
    other = script(tmp_path / "other", base, "import os\nprint(os.getppid())\n")
    result, pid = run_with_pid({"argv": [str(other)], "stdin": ""})
    assert result["answer"] == f"{pid}\n"


def test_in_its_process_an_exit_or_a_crash_is_reported_as_a_process_would_be(
    tmp_path: Path,
) -> None:
    code = script(tmp_path / "code", sys.executable,
                  "import sys\nsys.stderr.write('no inbox\\n')\nsys.exit(4)\n")  # fmt: skip
    assert run({"argv": [str(code)], "stdin": ""}) == {
        "failed": True, "rc": 4, "stderr": "no inbox\n", "changed": False}  # fmt: skip
    crash = script(tmp_path / "crash", sys.executable, "raise RuntimeError('boom')\n")
    result = run({"argv": [str(crash)], "stdin": ""})
    assert (result["rc"], result["stderr"].splitlines()[-1]) == (1, "RuntimeError: boom")
    text = script(tmp_path / "text", sys.executable, "raise SystemExit('bad input')\n")
    assert run({"argv": [str(text)], "stdin": ""})["stderr"] == "bad input\n"


# Every host of a fan-out pays for each module its rpc imports; none of these is needed
# to answer a poll (the inbox's records are NamedTuples, its options are read by hand,
# paths go through os.path, base64 through binascii).
NOT_ON_THE_POLL_PATH = ("argparse", "base64", "dataclasses", "hashlib", "ipaddress",
                        "pathlib", "pkgutil", "runpy", "subprocess", "traceback", "typer",
                        "typing", "urllib.parse", "control.cli", "control.paths")  # fmt: skip


def test_answering_a_poll_imports_only_what_the_inbox_needs(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    Queue(db).close()
    # `control queue rpc` as the console script runs it; -S: without `site`, whose
    # development-install hook would import pathlib before the rpc does.
    root = Path(__file__).resolve().parents[2]
    probe = (f"import sys; sys.path.insert(0, {str(root)!r}); "
             f"sys.argv = ['control', 'queue', 'rpc', '--db', {str(db)!r}, '--base64']\n"
             "from control.entry import main\n"
             "try:\n    main()\nfinally:\n    print(sorted(sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                          input=rpc.encode({"op": "poll", "limit": 200}), check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer, modules = done.stdout.splitlines()
    assert json.loads(answer)["ok"] is True
    imported = set(ast.literal_eval(modules))
    assert {"control.queue", "sqlite3"} <= imported
    assert sorted(imported.intersection(NOT_ON_THE_POLL_PATH)) == []


def test_the_script_is_compiled_as_python_would_compile_it(tmp_path: Path) -> None:
    # Not with this module's `from __future__ import annotations`: annotations evaluated.
    code = script(tmp_path / "code", sys.executable,
                  "def f(x: int) -> None: ...\nprint(f.__annotations__['x'] is int)\n")  # fmt: skip
    assert run({"argv": [str(code)], "stdin": ""})["answer"] == "True\n"
