"""The sandbox runner against the real bubblewrap, through the real CLI."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepline.runners._base import Launch
from stepline.runners._sandbox import bwrap_argv

from .containment_tools import ESCAPES, served, survivors

BWRAP = shutil.which("bwrap")
needs_bwrap = pytest.mark.skipif(BWRAP is None, reason="bubblewrap (bwrap) is not installed")


async def run_job(job: dict[str, Any], *args: str, mode: str = "default") -> dict[str, Any]:
    async with served(mode, *args) as (driver, _tag):
        await driver.send({"op": "submit", "job": job})
        return await driver.wait_for("finished", job="j1")


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory of the host outside /tmp (which the sandbox replaces by its own)."""
    path = Path(tempfile.mkdtemp(prefix="stepline-test-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@needs_bwrap
async def test_writes_only_in_its_workspace(host_dir: Path, tmp_path: Path) -> None:
    private = f"/tmp/stepline-sandbox-{uuid.uuid4().hex}"
    script = (
        "echo kept > made.txt && cat made.txt; "
        f"echo x > {host_dir}/escaped || echo refused-host; "
        f"echo x > {tmp_path}/escaped || echo refused-cwd; "
        f"echo x > {private} && echo private-tmp"
    )
    finished = await run_job({"run": ["sh", "-c", script], "runner": "sandbox"})
    said = finished["output"]["stdout"].split()
    assert said == ["kept", "refused-host", "refused-cwd", "private-tmp"], finished
    assert "Read-only file system" in finished["output"]["stderr"]
    in_cwd = {"run": "echo x > here || echo refused-cwd", "cwd": str(tmp_path)}
    finished = await run_job(in_cwd | {"runner": "sandbox"})
    assert finished["output"]["stdout"] == "refused-cwd\n", finished
    assert list(host_dir.iterdir()) == []
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists(private)


@needs_bwrap
@pytest.mark.parametrize("network", [False, True])
async def test_reaches_the_host_only_with_network(network: bool) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
        step = {"run": ["python3", "-c", connect], "runner": "sandbox", "network": network}
        finished = await run_job({"steps": [step]})
    if network:
        assert finished["state"] == "succeeded", finished
    else:
        assert finished["state"] == "failed", finished
        assert "ConnectionRefusedError" in finished["error"]["stderr"]


@needs_bwrap
async def test_sees_only_its_own_processes() -> None:
    script = "ls /proc | grep -c '^[0-9]'; cat /proc/1/comm"
    finished = await run_job({"runner": "sandbox", "steps": [{"run": script}]})
    count, first = finished["output"]["stdout"].split()
    assert int(count) <= 4, finished  # bwrap, sh, ls, grep
    assert first == "bwrap", finished


@needs_bwrap
@pytest.mark.parametrize("mode", ["default", "no-cgroup"])
@pytest.mark.parametrize("stop", ["end", "cancel", "step_timeout", "sigterm", "sigkill"])
async def test_no_escaper_outlives_a_sandboxed_step(mode: str, stop: str) -> None:
    pidfile = "/tmp/pids"  # the sandbox's own /tmp
    tail = "exit 0" if stop == "end" else "echo started; sleep 300"
    step: dict[str, Any] = {"run": ["sh", "-c", ESCAPES.format(p=pidfile) + tail], "grace": 1}
    step |= {"runner": "sandbox", "stream": True}
    if stop == "step_timeout":
        step["timeout"] = 1
    async with served(mode) as (driver, tag):
        await driver.send({"op": "submit", "job": {"steps": [step]}})
        if stop != "end":
            await driver.wait_for("output", line="started")
        if stop == "cancel":
            await driver.send({"op": "cancel", "job": "j1"})
        elif stop == "sigterm":
            driver.signal(signal.SIGTERM)
        elif stop == "sigkill":
            driver.proc.kill()
        if stop != "sigkill":
            finished = await driver.wait_for("finished", job="j1")
            assert finished["state"] == ("succeeded" if stop == "end" else finished["state"])
        assert survivors(tag, [], driver.proc.pid) == [], f"escapers outlived {stop}"


@needs_bwrap
@pytest.mark.parametrize(
    ("limits", "program", "limit"),
    [
        (
            {"memory": "64M"},
            "x = bytearray(400 << 20); x[::4096] = b'x' * len(x[::4096])",
            "memory",
        ),
        ({"cpu": 1}, "while True: pass", "cpu"),
        ({"output": "1K"}, "print('y' * 100000)", "output"),
        ({"files": 20}, "fs = [open('/dev/null') for _ in range(100)]", "files"),
    ],
)
async def test_limits_apply_in_the_sandbox(
    limits: dict[str, Any], program: str, limit: str
) -> None:
    step = {"run": ["python3", "-c", program], "limits": limits, "runner": "sandbox"}
    finished = await run_job(step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == limit


@needs_bwrap
async def test_processes_limit_counts_the_command_not_bwrap() -> None:
    """bwrap's own two processes are not the step's: 3 sleeps fit in a limit of 4."""
    fits = {"run": "sleep 0.2 & sleep 0.2 & sleep 0.2 & wait", "limits": {"processes": 4}}
    finished = await run_job(fits | {"runner": "sandbox"}, mode="cgroup")
    assert finished["state"] == "succeeded", finished


@needs_bwrap
async def test_serve_runner_sandbox_is_every_jobs_default() -> None:
    finished = await run_job({"run": "cat /proc/1/comm"}, "--runner", "sandbox")
    assert finished["output"]["stdout"] == "bwrap\n", finished
    local = {"run": "cat /proc/1/comm", "runner": "local"}
    finished = await run_job(local, "--runner", "sandbox")
    assert finished["output"]["stdout"] != "bwrap\n", finished


@needs_bwrap
async def test_a_missing_program_is_a_startup_failure() -> None:
    finished = await run_job({"run": ["no-such-program-here"], "runner": "sandbox"})
    assert finished["error"]["type"] == "startup_failure", finished
    assert finished["error"]["message"] == "no such program in the sandbox: 'no-such-program-here'"


async def test_without_bwrap_a_sandboxed_step_fails_to_start(tmp_path: Path) -> None:
    async with served("default", env={"PATH": str(tmp_path)}) as (driver, _tag):
        await driver.send({"op": "submit", "job": {"run": ["true"], "runner": "sandbox"}})
        finished = await driver.wait_for("finished", job="j1")
    assert finished["error"]["type"] == "startup_failure", finished
    assert "bubblewrap" in finished["error"]["message"]
    assert "bwrap" in finished["error"]["message"]


def test_the_bwrap_command_line() -> None:
    launch = Launch(["make"], cwd="/tmp/src", workspace="/tmp/ws", runner="sandbox")
    argv = bwrap_argv("/usr/bin/bwrap", launch)
    assert argv[:4] == ["/usr/bin/bwrap", "--ro-bind", "/", "/"]
    assert argv[-2:] == ["--", "make"]
    pairs = list(itertools.pairwise(argv))
    assert ("--bind", "/tmp/ws") in pairs
    assert ("--ro-bind", "/tmp/src") in pairs
    assert ("--chdir", "/tmp/src") in pairs
    assert "--unshare-net" in argv
    assert "--unshare-net" not in bwrap_argv("bwrap", Launch(["make"], network=True))
    inside = bwrap_argv("bwrap", Launch(["make"], cwd="/tmp/ws/sub", workspace="/tmp/ws"))
    assert ("--ro-bind", "/tmp/ws/sub") not in list(itertools.pairwise(inside))
