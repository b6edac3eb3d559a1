"""The link to the front's process: events relayed in order, a stalled reader told of a gap, and
the front's process gone with the server."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest
import trio

from stepline.web import _relay
from stepline.web._events import EventLog
from stepline.web._link import CLOSED, EVENTS, GAP, FrameReader
from stepline.web._relay import Relay
from stepline.web._share import LoopShare

from ..driver import serve


async def relayed(relay: Relay) -> list[tuple[bytes, bytes]]:
    """Every frame the relay sends until it says the events have ended."""
    ours, theirs = socket.socketpair()
    frames: list[tuple[bytes, bytes]] = []
    link = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    other = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    async with link, other, trio.open_nursery() as nursery:
        nursery.start_soon(relay.run, link, LoopShare())
        reader = FrameReader(other)
        while (received := await reader.next()) is not None:
            frames.append(received)
            if received[0] == CLOSED:
                break
    return frames


async def test_events_go_over_as_stdout_got_them_and_a_dropped_stretch_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_relay, "MAX_PENDING", 100)
    relay = Relay()
    relay.add(b'{"event":"accepted","job":"j1"}\n', 1)
    for _ in range(3):  # past the bound: everything waiting is dropped, and counted
        relay.add(b'{"event":"heartbeat"}\n{"event":"heartbeat"}\n', 2)
    relay.add(b'{"event":"finished","job":"j2"}\n', 1)
    relay.close()
    frames = await relayed(relay)
    assert frames[0] == (GAP, struct.pack("!Q", 5))  # the first three, and the next two
    heartbeats = b'{"event":"heartbeat"}\n{"event":"heartbeat"}\n'
    assert frames[1] == (EVENTS, heartbeats + b'{"event":"finished","job":"j2"}\n')
    assert frames[-1] == (CLOSED, b"")


def test_a_gap_in_the_log_uses_up_the_ids_and_keeps_nothing_older() -> None:
    log = EventLog()
    log.append_line("j1", b'{"event":"accepted","job":"j1"}\n')
    log.skip(4)
    log.append_line(None, b'{"event":"heartbeat"}\n')
    assert (log.first_id, log.last_id) == (6, 6)
    chunk, last = log.read(0)
    assert (chunk, last) == (b'id: 6\ndata: {"event":"heartbeat"}\n\n', 6)


def children(pid: int) -> list[int]:
    """Every thread's children (a process may be started from a worker thread)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for task in tasks for c in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.e2e
async def test_the_fronts_process_ends_with_the_server() -> None:
    async with serve("--http", "0", "--heartbeat", "0") as driver:
        with trio.fail_after(10):  # started beside the workers, maybe just after ready
            while not children(driver.proc.pid):
                await trio.sleep(0.02)
        (front,) = children(driver.proc.pid)
        assert b"stepline.web._child" in Path(f"/proc/{front}/cmdline").read_bytes()
        assert alive(front)
    with trio.fail_after(10):
        while alive(front):
            await trio.sleep(0.05)  # polling a process table: no event to wait on
    assert not os.path.exists(f"/proc/{front}") or not alive(front)
