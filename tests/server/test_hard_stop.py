"""A second SIGTERM writes every ``finished`` and ``bye`` even while a big workspace is being
removed, and the workspace is still removed before the process ends.

The removal of a job's workspace is shielded from cancellation, and ``finished`` waits for it.
A hard stop gives the last events one second to be written; a tree that took longer to delete
used to outlast it, and the job's ``finished`` and the ``bye`` were never written. The server runs
in this process, so that the removal can be held for as long as the test likes (a real tree that
slow would take minutes to make); the signals are real ones, sent to this process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from stepline import Config
from stepline.engine import _workspace
from stepline.server._serve import Server

HELD_AT_MOST = 30.0  # a guard against a hang; the fixed code releases it at once


async def test_a_second_sigterm_does_not_wait_for_a_big_workspace_removal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    removing, release = threading.Event(), threading.Event()
    real_remove = _workspace.remove_tree
    removed: list[str] = []

    def slow_remove(path: str) -> None:
        """The first removal is held (a huge tree); the next one (after ``bye``) is quick."""
        if not removing.is_set():
            removing.set()
            release.wait(HELD_AT_MOST)
            return
        real_remove(path)
        removed.append(path)

    monkeypatch.setattr(_workspace, "remove_tree", slow_remove)
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    stdout, stdout_receive = trio.testing.memory_stream_one_way_pair()
    server = Server(Config(heartbeat=0), stdin, stdout)
    events: list[dict[str, Any]] = []
    status: list[int] = []

    async def read_events() -> None:
        buffer = b""
        while chunk := await stdout_receive.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            events.extend(json.loads(line) for line in lines)

    async def wait_for(kind: str) -> dict[str, Any]:
        while not (found := [e for e in events if e["event"] == kind]):
            await trio.sleep(0.01)
        return found[0]

    job = {"run": f"touch big; pwd > {tmp_path}/cwd; exec sleep 60"}  # not empty: removed
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_events)

            async def serve() -> None:
                status.append(await server.run())
                await stdout.aclose()

            nursery.start_soon(serve)
            await stdin_send.send_all(json.dumps({"op": "submit", "job": job}).encode() + b"\n")
            await wait_for("started")
            while not (tmp_path / "cwd").exists():
                await trio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)  # cancel: the job stops, its removal starts
            while not removing.is_set():
                await trio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)  # a second one: stop at once
            await wait_for("bye")
    release.set()
    workspace = (tmp_path / "cwd").read_text().strip()
    assert status == [128 + signal.SIGTERM]
    finished = [e for e in events if e["event"] == "finished"]
    assert [e["state"] for e in finished] == ["cancelled"]
    assert events[-1]["event"] == "bye"
    # removed all the same, after `bye`, before run() returned; then the executor's parent of
    # workspaces (_workspace_parent.py), which held it
    assert removed == [workspace, os.path.dirname(workspace)]
    assert not os.path.exists(workspace)
