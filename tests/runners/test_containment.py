"""Containment through the real CLI: escapers die with their step, and limits trip by name."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from ..driver import Driver
from ..proc_tools import wait_for_pids_to_die
from .containment_tools import ESCAPES, MODES, served, survivors, wait_for_pids

STOPS = [
    "end",
    "cancel",
    "step_timeout",
    "job_timeout",
    "shutdown",
    "sigterm",
    "second_signal",
    "broken_stdout",
    "sigkill",
]
ESCAPE_TIME = 3  # seconds for the shell to start its four escapers, kept clear of any load


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stop", STOPS)
async def test_no_escaper_outlives_its_step(tmp_path: Path, mode: str, stop: str) -> None:
    pidfile = tmp_path / "pids"
    tail = "exit 0" if stop == "end" else "sleep 300"
    step: dict[str, Any] = {"run": ["sh", "-c", ESCAPES.format(p=pidfile) + tail], "grace": 1}
    job: dict[str, Any] = {"steps": [step]}
    # A timeout long enough for the four escapers to start and write their pids first: at 1 s
    # a loaded machine let it fire before the last one had, and the wait for it never ended.
    if stop == "step_timeout":
        step["timeout"] = ESCAPE_TIME
    if stop == "job_timeout":
        job["timeout"] = ESCAPE_TIME
    async with served(mode) as (driver, tag):
        await driver.send({"op": "submit", "job": job, "id": "x"})
        pids = await wait_for_pids(pidfile, 4)
        await _stop(driver, stop)
        if stop in ("sigkill", "broken_stdout"):
            with trio.fail_after(30):
                await driver.proc.wait()  # a closed stdout: stepline cancels its jobs and exits
        else:
            finished = await driver.wait_for("finished", job="j1")
            assert finished["state"] == ("succeeded" if stop == "end" else finished["state"])
        assert survivors(tag, pids, driver.proc.pid) == [], f"escapers outlived {stop}"


async def _stop(driver: Driver, stop: str) -> None:
    """Stop the running job by the path ``stop`` names (``end`` and timeouts need nothing)."""
    if stop == "cancel":
        await driver.send({"op": "cancel", "job": "j1"})
    elif stop == "shutdown":
        await driver.send({"op": "shutdown", "mode": "cancel"})
    elif stop in ("sigterm", "second_signal"):
        driver.signal(signal.SIGTERM)
        if stop == "second_signal":
            driver.signal(signal.SIGTERM)
    elif stop == "broken_stdout":
        assert driver.proc.stdout is not None
        await driver.proc.stdout.aclose()
    elif stop == "sigkill":
        driver.proc.kill()


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
    assert finished["error"]["stdout"].startswith("y\ny\n")  # the tail, as every run error has


@pytest.mark.parametrize("mode", MODES)
async def test_cpu_limit(mode: str) -> None:
    step = {"run": ["python3", "-c", "while True: pass"], "limits": {"cpu": 1}}
    finished = await run_one(mode, step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "cpu"


@pytest.mark.parametrize("mode", MODES)
async def test_files_limit(mode: str) -> None:
    opener = "fs = [open('/dev/null') for _ in range(100)]"
    step = {"run": ["python3", "-c", opener], "limits": {"files": 20}}
    finished = await run_one(mode, step)
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "files"


async def test_processes_limit_in_a_cgroup() -> None:
    forker = "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; wait"
    finished = await run_one("cgroup", {"run": forker, "limits": {"processes": 4}})
    assert finished["error"]["type"] == "resource_failure", finished
    assert finished["error"]["limit"] == "processes"


async def test_within_limits_succeeds() -> None:
    step = {"run": "echo ok", "limits": {"memory": "256M", "cpu": 10, "processes": 64}}
    finished = await run_one("cgroup", step)
    assert finished["state"] == "succeeded", finished


def _cgroup_v1_pids() -> bool:
    """Can this process make pids cgroups (root, with a v1 pids hierarchy mounted)?"""
    return os.geteuid() == 0 and os.access("/sys/fs/cgroup/pids/cgroup.procs", os.W_OK)


@pytest.mark.skipif(not _cgroup_v1_pids(), reason="needs root and a cgroup v1 pids hierarchy")
async def test_a_step_is_born_inside_its_cgroup() -> None:
    """Its very first instruction, and a child forked at once, already run in the step's group
    (a process moved in after it started could fork outside first)."""
    step = {"run": "grep pids /proc/self/cgroup; (grep pids /proc/self/cgroup &); wait"}
    finished = await run_one("cgroup", step)
    lines = finished["output"]["stdout"].splitlines()
    assert len(lines) == 2, lines
    assert all("/stepline-" in line for line in lines), lines


@pytest.mark.skipif(not _cgroup_v1_pids(), reason="needs root and a cgroup v1 pids hierarchy")
async def test_by_default_steps_with_tree_limits_get_a_cgroup() -> None:
    """Where cgroups can be made, a step with a memory or processes limit gets one by default;
    a step without keeps the cheaper marker (NOTES.md, Containment: the measured cost)."""
    where = "grep pids /proc/self/cgroup"
    jobs = [{"run": where, "limits": {"memory": "256M"}}, {"run": where, "limits": {"cpu": 60}}]
    async with served("default") as (driver, _tag):
        finished = []
        for n, job in enumerate(jobs, 1):
            await driver.send({"op": "submit", "job": job})
            finished.append(await driver.wait_for("finished", job=f"j{n}"))
    limited, other = finished
    assert "/stepline-" in limited["output"]["stdout"], limited
    assert "/stepline-" not in other["output"]["stdout"], other


def _guardians_of(serve_pid: int) -> list[int]:
    """The guardian processes of the stepline ``serve_pid`` (their marker starts with it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        mine = f"{serve_pid}-".encode()
        if len(argv) > 4 and argv[3].endswith(b"_guard.py") and argv[4].startswith(mine):
            found.append(int(entry.name))
    return found


async def test_a_rerun_job_never_runs_beside_its_earlier_run(tmp_path: Path) -> None:
    """stepline and its guardian both SIGKILLed: the step's process outlives them; the
    restarted stepline (``--state``, rerun) stops it before the job runs again."""
    pidfile, db = tmp_path / "pid", tmp_path / "state.db"
    state = f"s=$(cut -d' ' -f3 /proc/$(cat {pidfile})/stat 2>/dev/null)"
    alive = f'{state}; [ -n "$s" ] && [ $s != Z ]'
    script = (
        f"if [ -f {pidfile} ]; then {alive} && echo beside || echo alone; exit 0; fi;"
        f" echo $$ > {pidfile}; exec sleep 300"
    )  # a killed leftover may stay a zombie here (PID 1 does not reap): that is gone
    old = 0
    try:
        async with served("default", "--state", str(db)) as (driver, _tag):
            await driver.send({"op": "submit", "job": {"run": ["sh", "-c", script]}})
            old = (await wait_for_pids(pidfile, 1))[0]
            for guardian in _guardians_of(driver.proc.pid):
                os.kill(guardian, signal.SIGKILL)
            driver.proc.kill()
        async with served("default", "--state", str(db)) as (driver, _tag):
            finished = await driver.wait_for("finished", job="j1")
        assert finished["output"]["stdout"] == "alone\n", finished
    finally:
        if old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGKILL)


@pytest.mark.parametrize("mode", MODES)
async def test_a_reused_workspace_gets_no_writes_from_the_job_before(
    tmp_path: Path, mode: str
) -> None:
    """The pool hands the next job the same directory only once nothing of the previous job
    can write there: an escaper set to write a second after its step ended never does."""
    pidfile = tmp_path / "pid"
    # The escaper writes its pid once it has its own session, and the step waits for that: a
    # step that ended before the escaper's setsid would leave it in the step's group, killed by
    # the step's end, and until that zombie is reaped the pool refuses the directory (the run
    # then tests nothing, as the first assertion says).
    written = f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}"
    escaper = f"setsid sh -c '{written}; sleep 1; echo late > late' >/dev/null 2>&1 </dev/null"
    late = f"{escaper} & while [ ! -e {pidfile} ]; do sleep 0.01; done; pwd"
    async with served(mode, "--workers", "1") as (driver, _tag):
        await driver.send(
            {"op": "submit", "job": {"run": ["sh", "-c", late]}},
            {"op": "submit", "job": {"run": ["sh", "-c", "pwd; sleep 2; ls -A"]}},
        )
        first = await driver.wait_for("finished", job="j1")
        second = await driver.wait_for("finished", job="j2")
    before, after = first["output"]["stdout"], second["output"]["stdout"].split("\n", 1)
    assert after[0] == before.strip(), "the pool did not reuse the workspace: nothing tested"
    assert after[1].split() == []
    assert wait_for_pids_to_die([int(pidfile.read_text())], timeout=2.0) == []
