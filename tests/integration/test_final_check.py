"""The final check of a run (merge in dependency order, then verify) runs on a worker.

Real worker processes, a real bare remote, `control dispatch` and `control merge` as
processes. The orchestrator's environment holds a secret the workers do not have:
repository content that ran on the orchestrator's host would see it and leave a canary.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from control.localfleet import WorkerShape
from tests.integration.conftest import Pipeline, parse_events, write_spec

pytestmark = pytest.mark.slow

SECRET = "orchestrator-only-7f3c1e9a"


def run_control(args: list[str]) -> tuple[int, str, str]:
    """`control ARGS` as the orchestrator's host runs it: with a secret in its environment."""
    env = {**os.environ, "ORCH_ONLY_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "control", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return done.returncode, done.stdout, done.stderr


def dispatch_args(pipeline: Pipeline, spec: Path, *extra: str) -> list[str]:
    return pipeline.dispatch_command(spec, *extra)[3:]  # without `python -m control`


def hostile_phases(canary: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A phase delivering a conftest.py and an e2e/run.sh that, wherever they run, write a
    canary holding the orchestrator-only secret when they can see it; and a plain phase."""
    conftest = (
        "import os\nfrom pathlib import Path\n"
        "secret = os.environ.get('ORCH_ONLY_SECRET', '')\n"
        f"if secret:\n    Path({str(canary) + '-conftest'!r}).write_text(secret)\n"
    )
    run_sh = (
        'if [ -n "${ORCH_ONLY_SECRET:-}" ]; then\n'
        f'  echo "$ORCH_ONLY_SECRET" > {canary}-e2e\n'
        "fi\n"
        'echo "secret seen: ${ORCH_ONLY_SECRET:-none}"\n'
        "if [ -f plain.txt ]; then echo 'e2e ran on the integrated tree'; fi\n"
    )
    phases = [
        {
            "id": "hostile",
            "title": "Hostile",
            "task": "Deliver tests and an end-to-end script.",
            "deliverables": ["conftest.py", "test_hostile.py", "e2e/run.sh"],
            "verify": [
                "python -m pytest -q -p no:cacheprovider test_hostile.py",
                "bash e2e/run.sh",
            ],
        },
        {
            "id": "plain",
            "title": "Plain",
            "task": "Write plain.txt.",
            "deliverables": ["plain.txt"],
            "verify": ["test -f plain.txt", "bash e2e/run.sh"],
            "depends_on": ["hostile"],
        },
    ]
    plan = {
        "hostile": {
            "files": {
                "conftest.py": conftest,
                "test_hostile.py": "def test_ok():\n    assert True\n",
                "e2e/run.sh": run_sh,
            }
        },
        "plain": {"files": {"plain.txt": "plain\n"}},
    }
    return phases, plan


def integrations(pipeline: Pipeline) -> list[dict[str, Any]]:
    with sqlite3.connect(pipeline.state) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM integrations ORDER BY run_id, attempt").fetchall()
    return [{**dict(r), "response": json.loads(r["response"] or "null")} for r in rows]


def no_secret_anywhere(pipeline: Pipeline, *outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output
    for path in pipeline.root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def assert_checked_on_a_worker(pipeline: Pipeline, branch: str) -> None:
    """The final check ran the hostile files on a worker, once each, on the merged tree."""
    (done,) = [r for r in integrations(pipeline) if r["state"] == "done"]
    assert done["worker"] == "w1"
    result = done["response"]["response"]
    checks = {c["command"]: c for c in result["checks"]}
    assert list(checks) == [
        "python -m pytest -q -p no:cacheprovider test_hostile.py",
        "bash e2e/run.sh",
        "test -f plain.txt",
    ]
    assert checks["bash e2e/run.sh"]["phases"] == ["hostile", "plain"]  # asked twice, run once
    assert "e2e ran on the integrated tree" in checks["bash e2e/run.sh"]["output_tail"]
    assert "secret seen: none" in checks["bash e2e/run.sh"]["output_tail"]
    assert (
        "1 passed"
        in checks["python -m pytest -q -p no:cacheprovider test_hostile.py"]["output_tail"]
    )
    assert result["commit"] == done["response"]["response"]["commit"]
    assert pipeline.branch_file(branch, "plain.txt") == "plain\n"


def test_hostile_files_of_a_phase_never_run_on_the_orchestrator_at_the_end_of_a_run(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    phases, plan = hostile_phases(canary)
    pipeline.plan(plan)
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", phases)
    code, out, err = run_control(dispatch_args(pipeline, spec))
    assert code == 0, err + out[-2000:]
    summary = parse_events(out)[-1]
    assert summary["status"] == "done" and summary["merge_branch"]
    assert list(tmp_path.glob("canary*")) == []
    assert_checked_on_a_worker(pipeline, summary["merge_branch"])
    no_secret_anywhere(pipeline, out, err)


def test_control_merge_builds_and_checks_on_a_worker_never_here(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    phases, plan = hostile_phases(canary)
    pipeline.plan(plan)
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", phases)
    code, out, err = run_control(dispatch_args(pipeline, spec, "--no-merge"))
    assert code == 0, err
    assert parse_events(out)[-1]["merge_branch"] is None
    state = ["--state", str(pipeline.state)]
    code, _, err = run_control(["merge", *state, "--repo", str(pipeline.remote)])
    assert code == 2 and "no inventory" in err  # the check needs a worker to run on
    inventory = ["--inventory", str(fleet.inventory)]
    args = ["merge", *state, *inventory, "--repo", str(pipeline.remote), "--json"]
    code, merged_out, err = run_control(args)
    assert code == 0, err
    data = json.loads(merged_out)
    assert [m["phase"] for m in data["merged"]] == ["hostile", "plain"]
    assert data["worker"] == "w1"
    assert list(tmp_path.glob("canary*")) == []
    assert_checked_on_a_worker(pipeline, data["branch"])
    no_secret_anywhere(pipeline, out, merged_out, err)

    pipeline.close()  # every worker stopped: nobody can run the check
    code, _, err = run_control([*args, "--wait", "1"])
    assert code == 5, err
    assert "no worker is up to run the final check" in err
    assert list(tmp_path.glob("canary*")) == []


def two_sharing(command: str) -> list[dict[str, Any]]:
    return [
        {
            "id": pid,
            "title": pid,
            "task": f"Write {pid}.txt.",
            "deliverables": [f"{pid}.txt"],
            "verify": [command, f"test -f {pid}.txt"],
        }
        for pid in ("left", "right")
    ]


def test_a_verify_command_shared_by_phases_runs_once_on_the_integrated_tree(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    counter = pipeline.agent_io / "integrated-runs"  # the one place the sandbox may write
    shared = f"if [ -f left.txt ] && [ -f right.txt ]; then echo run >> {counter}; fi"
    pipeline.plan({p: {"files": {f"{p}.txt": f"{p}\n"}} for p in ("left", "right")})
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    spec = write_spec(tmp_path / "spec.json", two_sharing(shared))
    code, events, err = pipeline.dispatch(spec)
    assert code == 0, err
    assert counter.read_text() == "run\n"  # once, not once per phase that named it
    merged = next(e for e in events if e.get("event") == "merged")
    assert merged["checks"] == 3  # the shared command and each phase's own


def test_a_shared_check_failing_on_the_integrated_tree_names_the_phases_that_asked(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    both = "! { [ -f left.txt ] && [ -f right.txt ]; }"  # passes in each phase, fails merged
    pipeline.plan({p: {"files": {f"{p}.txt": f"{p}\n"}} for p in ("left", "right")})
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", two_sharing(both))
    # the failure as reported to a person (the merge queue would send `right` back)
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "merge_queue": False}))
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1
    summary = events[-1]
    assert summary["status"] == "failed" and summary["merge_branch"] is None
    assert "phase(s) left, right" in summary["reason"]
    assert both in summary["reason"]
    (row,) = integrations(pipeline)
    assert row["response"]["response"]["failed_phases"] == ["left", "right"]
    heads = subprocess.run(
        ["git", "-C", str(pipeline.remote), "for-each-ref", "--format=%(refname)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/integration/" not in heads  # a failing tree is not pushed


SAME_LINES = {p: {"files": {"same.txt": f"{p}\n", f"{p}.txt": "x\n"}} for p in ("left", "right")}


def test_two_phases_editing_the_same_lines_are_resolved_by_a_resolution_task(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Independent phases conflict only at the final check: a resolution task goes to a
    worker with both phases merged and the conflict left for its agent, is verified
    there, accepted on the remote, and merged: the run finishes without a person."""
    pipeline.plan({**SAME_LINES, "_resolve": {"resolve_files": {"same.txt": "left and right\n"}}})
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    spec = write_spec(tmp_path / "spec.json", two_sharing("test -s same.txt"))
    code, events, err = pipeline.dispatch(spec)
    assert code == 0, err
    kinds = [e.get("event") for e in events]
    assert (
        kinds.index("conflict_resolving") < kinds.index("conflict_resolved") < kinds.index("merged")
    )
    resolving = next(e for e in events if e.get("event") == "conflict_resolving")
    assert "'right'" in resolving["reason"] and "same.txt" in resolving["reason"]
    (run,) = [
        r for r in pipeline.agent_runs() if r["event"] == "start" and r["phase"] == "_resolve"
    ]
    assert "same.txt" in run["prompt_tail"] and "untrusted-data" in run["prompt_tail"]
    rows = integrations(pipeline)
    # (the merge queue may have checked the first phase done while the other ran)
    assert [(r["task"] and json.loads(r["task"])["type"], r["state"]) for r in rows][-3:] == [
        ("integration", "failed"),
        ("phase", "done"),
        ("integration", "done"),
    ]
    rows = rows[-3:]
    merged = events[-1]["merge_branch"]
    assert pipeline.branch_file(merged, "same.txt") == "left and right\n"
    assert pipeline.branch_file(merged, "left.txt") == "x\n"
    assert pipeline.branch_file(merged, "right.txt") == "x\n"
    # the final check ran every phase's commands on the resolved tree
    checks = rows[2]["response"]["response"]["checks"]
    assert {c["command"] for c in checks} == {"test -s same.txt", "test -f left.txt",
                                               "test -f right.txt"}  # fmt: skip


def test_a_conflict_at_the_final_check_names_the_phase_and_the_files(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A resolution that leaves the markers is reported with the conflict, as before."""
    pipeline.plan(SAME_LINES)
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", two_sharing("true"))
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1
    reason = events[-1]["reason"]
    assert "'right'" in reason and "same.txt" in reason, reason
    assert "its resolution failed" in reason and "conflict markers" in reason, reason
    assert [r["phase"] for r in pipeline.agent_runs() if r["event"] == "start"].count(
        "_resolve"
    ) == 1


def test_resolve_conflicts_false_reports_a_final_conflict_without_an_agent(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.plan(SAME_LINES)
    pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", two_sharing("true"))
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "resolve_conflicts": False}))
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1
    assert "'right'" in events[-1]["reason"] and "resolution" not in events[-1]["reason"]
    assert "_resolve" not in [r["phase"] for r in pipeline.agent_runs()]
    assert len(integrations(pipeline)) == 1


def test_a_credential_printed_by_the_final_check_is_masked_everywhere(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """Two phases each deliver half of the worker's API key (neither half is a secret, so
    both are committed); only the integrated tree holds it whole, and its check prints it.
    The value never reaches the response, the worker's logs or the state database."""
    key = "sk-ant-api03-FINALCHECK-" + os.urandom(16).hex()
    creds = tmp_path / "credentials.env"
    creds.write_text(f"ANTHROPIC_API_KEY={key}\n")
    creds.chmod(0o600)
    halves = {"left": key[:10], "right": key[10:]}
    pipeline.plan({p: {"files": {f"{p}.txt": half}} for p, half in halves.items()})
    pipeline.start_fleet(WorkerShape("w1"), settings={"credential_file": str(creds)})
    printed = 'echo "joined: $(cat left.txt 2>/dev/null)$(cat right.txt 2>/dev/null)"'
    spec = write_spec(tmp_path / "spec.json", two_sharing(printed))
    code, events, err = pipeline.dispatch(spec)
    assert code == 0, err
    (row,) = integrations(pipeline)
    checks = {c["command"]: c for c in row["response"]["response"]["checks"]}
    assert "joined: [REDACTED]" in checks[printed]["output_tail"]
    assert key not in json.dumps(events) + err
    for path in pipeline.root.rglob("*"):
        if path.is_file() and path != creds:
            assert key.encode() not in path.read_bytes(), path


def test_control_merge_is_refused_while_a_dispatch_drives_the_same_run(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A resumed dispatch is in its final check (a slow check on a worker); a `control
    merge` of that run meanwhile is refused in one line naming the driver, sends nothing,
    and the dispatch ends with its one merge."""
    gate = pipeline.agent_io / "release-check"  # the sandbox may write here
    slow = f"while [ ! -f {gate} ] && [ -f left.txt ] && [ -f right.txt ]; do sleep 0.1; done"
    pipeline.plan({p: {"files": {f"{p}.txt": f"{p}\n"}} for p in ("left", "right")})
    fleet = pipeline.start_fleet(WorkerShape("w1"))
    spec = write_spec(tmp_path / "spec.json", two_sharing(slow))
    code, _, err = run_control(dispatch_args(pipeline, spec, "--no-merge"))
    assert code == 0, err
    driving = subprocess.Popen(
        [sys.executable, "-m", "control", *dispatch_args(pipeline, spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not [r for r in integrations(pipeline) if r["state"] == "dispatched"]:
            assert driving.poll() is None and time.monotonic() < deadline, "no final check sent"
            time.sleep(0.1)
        state = ["--state", str(pipeline.state), "--inventory", str(fleet.inventory)]
        code, out, err = run_control(["merge", *state, "--repo", str(pipeline.remote)])
        assert code == 4, (code, out, err)  # ExitCode.CONFLICT
        line = err.strip()
        assert "\n" not in line and f"is driven by process {driving.pid}" in line, err
        assert len(integrations(pipeline)) == 1  # the merge sent nothing
    finally:
        gate.write_text("go\n")
        out, err = driving.communicate(timeout=120)
    assert driving.returncode == 0, err
    (row,) = integrations(pipeline)
    assert row["state"] == "done"


PYTEST = "python -m pytest -q -p no:cacheprovider"


def counting_test(name: str, counter: Path, *, fails_with: str | None = None) -> str:
    """A test file that notes each run on the integrated tree (every .txt delivered,
    d.txt by a phase no other builds on) in `counter`; with `fails_with`, it fails
    where that file is there too."""
    failing = f"    assert not Path({fails_with!r}).exists()\n" if fails_with else ""
    return (
        "from pathlib import Path\n\n\n"
        f"def test_{name}():\n"
        "    if all(Path(f).exists() for f in ('a.txt', 'b.txt', 'c.txt', 'd.txt')):\n"
        f"        with open({str(counter)!r}, 'a') as out:\n"
        f"            out.write('{name}\\n')\n"
        f"{failing}"
    )


def three_testing(verify: dict[str, str], after: dict[str, list[str]]) -> list[dict[str, Any]]:
    alone = {"id": "d", "title": "d", "task": "Write d.txt.", "deliverables": ["d.txt"]}
    return [alone | {"verify": ["test -f d.txt"]}] + [
        {
            "id": pid,
            "title": pid,
            "task": f"Write {pid}.txt and tests/test_{pid}.py.",
            "deliverables": [f"{pid}.txt", f"tests/test_{pid}.py"],
            "verify": [verify[pid]],
            "depends_on": after.get(pid, []),
        }
        for pid in ("a", "b", "c")
    ]


def test_test_files_named_by_several_phases_run_once_on_the_integrated_tree(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    counter = pipeline.agent_io / "tests-run"  # the one place the sandbox may write
    pipeline.plan(
        {
            p: {"files": {f"{p}.txt": f"{p}\n", f"tests/test_{p}.py": counting_test(p, counter)}}
            for p in ("a", "b", "c")
        }
        | {"d": {"files": {"d.txt": "d\n"}}}
    )
    pipeline.start_fleet(WorkerShape("w1"), WorkerShape("w2"))
    verify = {
        "a": f"{PYTEST} tests/test_a.py",
        "b": f"{PYTEST}  tests/test_a.py 'tests/test_b.py'",
        "c": f"{PYTEST} tests/test_b.py::test_b tests/test_c.py",
    }
    spec = write_spec(tmp_path / "spec.json", three_testing(verify, {"b": ["a"], "c": ["b"]}))
    # only the final check counted: no check of a part of the run while d runs beside it
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "merge_queue": False}))
    code, events, err = pipeline.dispatch(spec)
    assert code == 0, err
    assert sorted(counter.read_text().split()) == ["a", "b", "c"]  # each test file once
    merged = next(e for e in events if e.get("event") == "merged")
    assert merged["checks"] == 2
    (row,) = integrations(pipeline)
    _, check = row["response"]["response"]["checks"]
    assert check["command"] == f"{PYTEST} tests/test_a.py tests/test_b.py tests/test_c.py"
    assert check["phases"] == ["a", "b", "c"]


def test_a_merged_test_command_that_fails_names_only_the_phases_whose_own_tests_fail(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    counter = pipeline.agent_io / "tests-run"
    files = {p: counting_test(p, counter) for p in ("a", "b")}
    files["c"] = counting_test("c", counter, fails_with="a.txt")  # fails only beside a
    pipeline.plan(
        {p: {"files": {f"{p}.txt": f"{p}\n", f"tests/test_{p}.py": files[p]}} for p in files}
        | {"d": {"files": {"d.txt": "d\n"}}}
    )
    pipeline.start_fleet(WorkerShape("w1"))
    verify = {p: f"{PYTEST} tests/test_{p}.py" for p in ("a", "b", "c")}
    spec = write_spec(tmp_path / "spec.json", three_testing(verify, {}))
    # the failure as reported to a person (the merge queue would send `c` back)
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "merge_queue": False}))
    code, events, _ = pipeline.dispatch(spec)
    assert code == 1
    assert "phase(s) c;" in events[-1]["reason"]
    (row,) = integrations(pipeline)
    result = row["response"]["response"]
    assert result["failed_phases"] == ["c"]
    _, merged, *alone = result["checks"]
    assert merged["command"] == f"{PYTEST} tests/test_a.py tests/test_b.py tests/test_c.py"
    assert merged["exit_code"] != 0 and merged["part_of"] is None
    assert [(c["command"], c["exit_code"] != 0, c["part_of"]) for c in alone] == [
        (verify[p], p == "c", merged["command"]) for p in ("a", "b", "c")
    ]
