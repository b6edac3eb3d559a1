"""Containment through the real CLI: escapers die with their step, and limits trip by name."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from ..driver import SERVE, Driver
from ..proc_tools import new_tag, tagged_env, tagged_processes, wait_for_pids_to_die

ESCAPES = (
    "setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $! >> {p}; "
    "timeout 300 sleep 300 >/dev/null 2>&1 </dev/null & echo $! >> {p}; "
    "(sleep 300 >/dev/null 2>&1 </dev/null & echo $! >> {p}); "
    "nohup sleep 300 >/dev/null 2>&1 </dev/null & echo $! >> {p}; "
)

MODES = ["cgroup", "no-cgroup"]


@asynccontextmanager
async def served(mode: str, *args: str) -> AsyncIterator[tuple[Driver, str]]:
    tag = new_tag()
    env = tagged_env(tag)
    env["STEPLINE_CGROUPS"] = "1" if mode == "cgroup" else "0"
    proc = await trio.lowlevel.open_process(
        [*SERVE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    driver = Driver(proc)
    try:
        with trio.fail_after(60):
            assert (await driver.next_event())["event"] == "ready"
            yield driver, tag
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def wait_for_pids(path: Path, count: int) -> list[int]:
    while (
        len(pids := [int(x) for x in (path.read_text() if path.exists() else "").split()]) < count
    ):
        await trio.sleep(0.02)
    return pids


def survivors(tag: str, pids: list[int], serve_pid: int) -> list[int]:
    """Escapers (and their children, found by the test's tag) alive 2 s after the stop."""
    alive = wait_for_pids_to_die(pids, timeout=2.0)
    others = [p for p in tagged_processes(tag) if p != serve_pid]
    return alive + wait_for_pids_to_die(others, timeout=2.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "stop", ["end", "cancel", "step_timeout", "shutdown", "sigterm", "sigkill"]
)
async def test_no_escaper_outlives_its_step(tmp_path: Path, mode: str, stop: str) -> None:
    if mode == "cgroup" and stop in ("end", "sigkill"):
        pytest.xfail("known gap of the opt-in cgroup mode (NOTES.md, Containment)")
    pidfile = tmp_path / "pids"
    tail = "exit 0" if stop == "end" else "sleep 300"
    step: dict[str, Any] = {"run": ["sh", "-c", ESCAPES.format(p=pidfile) + tail], "grace": 1}
    if stop == "step_timeout":
        step["timeout"] = 1
    async with served(mode) as (driver, tag):
        await driver.send({"op": "submit", "job": {"steps": [step]}, "id": "x"})
        pids = await wait_for_pids(pidfile, 4)
        if stop == "cancel":
            await driver.send({"op": "cancel", "job": "j1"})
        elif stop == "shutdown":
            await driver.send({"op": "shutdown", "mode": "cancel"})
        elif stop == "sigterm":
            driver.signal(signal.SIGTERM)
        elif stop == "sigkill":
            driver.proc.kill()
        if stop != "sigkill":
            finished = await driver.wait_for("finished", job="j1")
            assert finished["state"] == ("succeeded" if stop == "end" else finished["state"])
        assert survivors(tag, pids, driver.proc.pid) == [], f"escapers outlived {stop}"


async def run_one(mode: str, step: dict[str, Any]) -> dict[str, Any]:
    async with served(mode) as (driver, _tag):
        await driver.send({"op": "submit", "job": step, "id": "x"})
        return await driver.wait_for("finished", job="j1")


PY = "import sys; "


@pytest.mark.parametrize("mode", MODES)
async def test_memory_limit_is_a_resource_failure_not_a_kill(mode: str) -> None:
    hog = "x = bytearray(400 << 20); x[::4096] = b'x' * len(x[::4096])"
    step = {"run": ["python3", "-c", hog], "limits": {"memory": "64M"}}
    finished = await run_one(mode, step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "memory"


@pytest.mark.parametrize("mode", MODES)
async def test_output_limit(mode: str) -> None:
    step = {"run": "yes | head -c 100000", "limits": {"output": "1K"}}
    finished = await run_one(mode, step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "output"


@pytest.mark.parametrize("mode", MODES)
async def test_cpu_limit(mode: str) -> None:
    step = {"run": ["python3", "-c", "while True: pass"], "limits": {"cpu": 1}}
    finished = await run_one(mode, step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "cpu"


@pytest.mark.parametrize("mode", MODES)
async def test_files_limit(mode: str) -> None:
    if mode == "cgroup":
        pytest.xfail("known gap of the opt-in cgroup mode (NOTES.md, Containment)")
    opener = "fs = [open('/dev/null') for _ in range(100)]"
    step = {"run": ["python3", "-c", opener], "limits": {"files": 20}}
    finished = await run_one(mode, step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "files"


@pytest.mark.xfail(reason="known gap of the opt-in cgroup mode (NOTES.md)", strict=True)
async def test_processes_limit_in_a_cgroup() -> None:
    forker = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait"
    finished = await run_one("cgroup", {"run": forker, "limits": {"processes": 4}})
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "processes"


async def test_within_limits_succeeds() -> None:
    step = {"run": "echo ok", "limits": {"memory": "256M", "cpu": 10, "processes": 64}}
    finished = await run_one("cgroup", step)
    assert finished["state"] == "succeeded", finished
