"""Workspaces of a SIGKILLed server are removed by the next server to start, and a live
server's are left alone (``engine/_workspace_parent.py``), through the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import trio

from ..driver import ENV, SERVE, Driver, serve

PREFIX = "stepline-server-"


def parents(tmp: Path) -> set[Path]:
    return {p for p in tmp.iterdir() if p.name.startswith(PREFIX) and not p.is_symlink()}


async def start_holding_job(driver: Driver, marks: Path, name: str) -> Path:
    """Start a job that leaves a file in its workspace and runs on; its workspace, once it is
    there."""
    ready = marks / name
    job = {"run": f"echo data > left && pwd > {ready}.tmp && mv {ready}.tmp {ready} && sleep 300"}
    await driver.send({"op": "submit", "id": name, "job": job})
    while not ready.exists():
        await trio.sleep(0.02)
    return Path(ready.read_text().strip())


async def test_a_killed_servers_workspaces_go_at_the_next_start_and_a_live_ones_stay(
    tmp_path: Path,
) -> None:
    tmp, marks, elsewhere = tmp_path / "tmp", tmp_path / "marks", tmp_path / "elsewhere"
    for directory in (tmp, marks, elsewhere):
        directory.mkdir()
    (elsewhere / "precious").write_text("not stepline's")
    (tmp / f"{PREFIX}link").symlink_to(elsewhere)  # a link by that name is never followed
    kept = tmp / "stepline-kept1234"  # a loose workspace (kept, or an older stepline's)
    kept.mkdir()
    env = {**ENV, "TMPDIR": str(tmp)}
    with trio.fail_after(60):
        async with serve(env=env, deadline=60) as killed, serve(env=env, deadline=60) as live:
            dead_workspace = await start_holding_job(killed, marks, "killed")
            live_workspace = await start_holding_job(live, marks, "live")
            # Each server's workspaces are in a parent of its own, beside nothing else of its.
            assert dead_workspace.parent != live_workspace.parent
            assert parents(tmp) == {dead_workspace.parent, live_workspace.parent}
            killed.signal(signal.SIGKILL)
            await killed.proc.wait()
            assert (dead_workspace / "left").exists()  # what the kill left behind
            async with serve(env=env, deadline=60) as later:
                while dead_workspace.parent.exists():  # removed beside the later start
                    await trio.sleep(0.02)
                await later.close_stdin()
                assert (await later.rest())[-1]["event"] == "bye"
            assert (live_workspace / "left").read_text() == "data\n"  # the live one: untouched
            assert parents(tmp) == {live_workspace.parent}
            job = (await live.wait_for("accepted"))["job"]
            await live.send({"op": "cancel", "job": job, "id": "c"})
            await live.close_stdin()
            finished = await live.wait_for("finished")
            assert finished["state"] == "cancelled", finished
            await live.rest()
    assert parents(tmp) == set()  # the live server removed its own at its end
    assert sorted(os.listdir(tmp)) == sorted([f"{PREFIX}link", kept.name])
    assert (elsewhere / "precious").read_text() == "not stepline's"


def test_servers_that_end_at_once_leave_nothing_in_tmpdir(tmp_path: Path) -> None:
    """A server given no work ends while its start-up sweep may still be under way; Python's
    first look for ``$TMPDIR`` writes a probe file there, and when that look was the sweep
    thread's, about every other such server left the file behind."""
    env = {**ENV, "TMPDIR": str(tmp_path)}
    for _ in range(10):
        done = subprocess.run(
            [*SERVE, "--heartbeat", "0"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=60,
            check=True,
        )
        assert done.stdout.splitlines()[-1].startswith(b'{"event":"bye"')
    assert sorted(os.listdir(tmp_path)) == []
