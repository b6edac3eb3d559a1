"""The outbox's writer over a real pipe: written directly while the pipe takes it, through
``send_all`` once it is full, in order either way, and a reader that went away is noticed."""

from __future__ import annotations

import os

import trio

from stepline.wire._outbox import StreamOutbox


async def _read_all(fd: int, until: int) -> bytes:
    """Read the pipe's other end until ``until`` bytes came (or EOF)."""
    data = bytearray()
    while len(data) < until:
        await trio.lowlevel.wait_readable(fd)
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def test_events_larger_than_the_pipe_arrive_whole_and_in_order() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    stream = trio.lowlevel.FdStream(write_end)
    outbox = StreamOutbox(stream)
    events = [{"event": "log", "n": i, "pad": "x" * 1000} for i in range(400)]  # ~400 KB
    pad = b"x" * 1000
    expected = b"".join(b'{"event":"log","n":%d,"pad":"%s"}\n' % (i, pad) for i in range(400))
    got = b""

    async def reader() -> None:
        nonlocal got
        await trio.sleep(0.01)  # let the pipe fill first: the writer must wait for room
        got = await _read_all(read_end, len(expected))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run)
            nursery.start_soon(reader)
            for i, ev in enumerate(events):
                outbox.emit(ev)
                if i % 100 == 99:  # emit in batches, as producers do
                    await trio.lowlevel.checkpoint()
            await outbox.wait_written(len(events))
            outbox.close()
    finally:
        await stream.aclose()
        os.close(read_end)
    assert got == expected
    assert outbox.written == len(events)
    assert not outbox.broken


async def test_a_reader_that_went_away_makes_the_outbox_broken() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = trio.lowlevel.FdStream(write_end)
    outbox = StreamOutbox(stream)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run)
        outbox.emit({"event": "x"})
        with trio.fail_after(10):
            await outbox.broken_event.wait()
    await stream.aclose()
    assert outbox.broken


async def test_a_closed_stream_is_not_written_through_its_old_descriptor() -> None:
    """A closed ``FdStream`` gave its descriptor back: the writer must not ``write`` that
    number (it may be another file by now), and reports the stream as gone."""
    read_end, write_end = os.pipe()
    stream = trio.lowlevel.FdStream(write_end)
    outbox = StreamOutbox(stream)  # made while the stream was open
    await stream.aclose()
    other_read, other_write = os.pipe()  # likely reuses the number write_end had
    os.set_blocking(other_read, False)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run)
            outbox.emit({"event": "x"})
            with trio.fail_after(10):
                await outbox.broken_event.wait()
        try:
            leaked = os.read(other_read, 100)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        for fd in (read_end, other_read, other_write):
            os.close(fd)
