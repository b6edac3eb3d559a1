"""Helpers of the containment tests: a tagged ``stepline serve``, escapers, survivors."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

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
async def served(
    mode: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Driver, str]]:
    """A real ``stepline serve`` whose processes carry a fresh test tag; ``mode`` turns cgroups
    on or off, or leaves the choice to stepline (``default``)."""
    tag = new_tag()
    env = {**tagged_env(tag), **(env or {})}
    env.pop("STEPLINE_CGROUPS", None)
    if mode != "default":
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
