"""The phase sandbox against real bubblewrap: what a sandboxed command sees and may do,
the worker's check that refuses work without it, and a trusted host shown as such."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from control.errors import UnavailableError
from control.health import health_report
from control.inventory import Worker
from control.process import run_watched
from control.transport.base import PollResult
from control.worker.checks import run_checks
from control.worker.config import default_config
from control.worker.sandbox import Jail, Sandbox, sandbox_for

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


@pytest.fixture
def jail(tmp_path: Path) -> Jail:
    (tmp_path / "checkout").mkdir()
    (tmp_path / "scratch").mkdir()
    (tmp_path / "beside").mkdir()
    (tmp_path / "beside" / "secret.txt").write_text("beside\n")
    return Jail(checkout=tmp_path / "checkout", scratch=tmp_path / "scratch")


def run(jail: Jail, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    argv, child_env = Sandbox.find().wrapper(jail)(
        ["/bin/bash", "-c", script], {"PATH": os.defpath, **env}
    )
    return subprocess.run(argv, capture_output=True, text=True, env=child_env, check=False)


def test_inside_only_the_checkout_and_scratch_are_writable(jail: Jail) -> None:
    done = run(
        jail,
        "id -u; echo ok > work.txt; echo ok > $HOME/h; ls ../beside 2>&1; "
        "touch /usr/x 2>&1; cat /etc/shadow 2>&1; ls /root 2>&1; echo end",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "65534"
    assert (jail.checkout / "work.txt").read_text() == "ok\n"
    assert (jail.scratch / "home" / "h").read_text() == "ok\n"
    assert "No such file or directory" in lines[1]  # the slot beside is not there
    assert "Read-only file system" in done.stdout
    assert "/etc/shadow: No such file" in done.stdout
    assert "/root': No such file" in done.stdout


# The command ends only once its leftover is in a session of its own (`ready` is written
# after setsid), so the watcher's kill of the command's process group cannot catch it.
LEAVE_ONE_RUNNING = (
    "(setsid bash -c 'touch ready; exec -a {marker} sleep 300' &); "
    "until [ -e ready ]; do sleep 0.05; done; echo started"
)


def _running(marker: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"^{marker} 300$"], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.parametrize("sandboxed", [True, False])
def test_what_a_command_leaves_running_dies_with_it(
    jail: Jail, tmp_path: Path, sandboxed: bool
) -> None:
    """A leftover in its own session outlives a plain run (the process group's kill
    misses it) and dies with a sandboxed one."""
    marker = f"sandbox-leftover-{os.getpid()}-{tmp_path.name}"
    outcome = run_watched(
        ["/bin/bash", "-c", LEAVE_ONE_RUNNING.format(marker=marker)],
        cwd=jail.checkout, env={"PATH": os.defpath}, log_path=None, wall_timeout_s=30,
        wrap=Sandbox.find().wrapper(jail) if sandboxed else None,
    )  # fmt: skip
    assert outcome.exit_code == 0 and not outcome.timed_out
    deadline = time.monotonic() + (0.5 if sandboxed else 20)  # its exec may come late
    while not (leftovers := _running(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert (leftovers == []) is sandboxed


def test_no_network_when_asked(jail: Jail) -> None:
    online = run(jail, "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    offline = run(replace(jail, network=False), "cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    assert offline.stdout.split() == ["lo"]
    assert online.stdout.split() != ["lo"]


def test_the_workers_git_and_ssh_settings_stay_outside(jail: Jail) -> None:
    done = run(jail, "env", SSH_AUTH_SOCK="/run/agent.sock", GIT_DIR="/x", KEEP="yes")
    assert "KEEP=yes" in done.stdout
    assert "SSH_AUTH_SOCK" not in done.stdout and "GIT_DIR" not in done.stdout
    assert f"HOME={jail.scratch / 'home'}" in done.stdout


def _bin_without_bwrap(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("git", "bash", "sh"):
        found = shutil.which(program)
        assert found is not None
        (bin_dir / program).symlink_to(found)
    return str(bin_dir)


def test_a_host_without_the_sandbox_refuses_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = default_config(tmp_path / "home", "w1")
    monkeypatch.setenv("PATH", _bin_without_bwrap(tmp_path))
    with pytest.raises(UnavailableError, match="bubblewrap"):
        Sandbox.find()
    report = run_checks(config)
    assert any(
        "bubblewrap" in p and "superagent_trusted_host: true" in p for p in report.problems
    ), report.problems
    assert report.versions["sandbox"] is None


def test_a_trusted_host_runs_without_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = replace(default_config(tmp_path / "home", "w1"), trusted_host=True)
    monkeypatch.setenv("PATH", _bin_without_bwrap(tmp_path))
    report = run_checks(config)
    assert not [p for p in report.problems if "bubblewrap" in p]
    assert report.versions["sandbox"] == "none (trusted host)"
    beat = {"worker_id": "w1", "status": "idle", "beat_at": time.time(),
            "versions": report.versions}  # fmt: skip
    worker = Worker("w1", vars={"superagent_trusted_host": True})
    shown = health_report(worker, PollResult("w1", True, heartbeats=[beat]), time.time())
    assert shown["trusted_host"] is True and shown["versions"]["sandbox"] == "none (trusted host)"


def test_a_working_sandbox_is_reported(tmp_path: Path) -> None:
    report = run_checks(default_config(tmp_path / "home", "w1"))
    assert report.versions["sandbox"] == "bubblewrap"
    assert not [p for p in report.problems if "bubblewrap" in p]


def test_tools_installed_behind_a_symlink_are_found_by_the_path_the_worker_uses(
    tmp_path: Path,
) -> None:
    """As the nodejs role installs Node: /opt/superagent/node -> node-v20..., PATH
    naming the symlink. A verify command's `npm` must be found inside the sandbox."""
    real = tmp_path / "node-v20" / "bin"
    real.mkdir(parents=True)
    (real / "npm").write_text("#!/bin/sh\necho npm here\n")
    (real / "npm").chmod(0o755)
    shutil.copy("/bin/true", real / "node")
    (tmp_path / "node").symlink_to(tmp_path / "node-v20")
    config = replace(default_config(tmp_path / "home", "w1"), node=str(tmp_path / "node/bin/node"))
    sandbox = sandbox_for(config)
    assert sandbox is not None
    jail = Jail(checkout=tmp_path / "checkout", scratch=tmp_path / "scratch")
    jail.checkout.mkdir()
    jail.scratch.mkdir()
    argv, env = sandbox.wrapper(jail)(
        ["/bin/sh", "-c", "npm"], {"PATH": f"{tmp_path}/node/bin:/usr/bin:/bin"}
    )
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert (done.returncode, done.stdout) == (0, "npm here\n"), done.stderr


def test_an_agent_cli_the_worker_is_pinned_to_runs_inside_the_sandbox(tmp_path: Path) -> None:
    """As the agent_clis role installs codex: /opt/superagent/codex -> codex-<version>, its
    bin/codex a relative link into lib/node_modules, and the worker pinned to it."""
    package = tmp_path / "codex-0.169.0" / "lib" / "node_modules" / "@openai" / "codex"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "codex.js").write_text("#!/bin/sh\necho codex-cli 0.169.0\n")
    (package / "bin" / "codex.js").chmod(0o755)
    (tmp_path / "codex-0.169.0" / "bin").mkdir()
    (tmp_path / "codex-0.169.0" / "bin" / "codex").symlink_to(
        "../lib/node_modules/@openai/codex/bin/codex.js"
    )
    (tmp_path / "codex").symlink_to(tmp_path / "codex-0.169.0")
    base = default_config(tmp_path / "home", "w1")
    config = replace(base, codex=str(tmp_path / "codex/bin/codex"),
                     pins=replace(base.pins, codex="0.169.0"))  # fmt: skip
    jail = Jail(checkout=tmp_path / "checkout", scratch=tmp_path / "scratch")
    jail.checkout.mkdir()
    jail.scratch.mkdir()
    for pinned, expected in ((config, 0), (replace(config, pins=base.pins), 127)):
        sandbox = sandbox_for(pinned)
        assert sandbox is not None
        argv, env = sandbox.wrapper(jail)(
            ["/bin/sh", "-c", "codex --version"], {"PATH": f"{tmp_path}/codex/bin:/usr/bin:/bin"}
        )
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == expected, done.stderr  # not pinned here: not shown
