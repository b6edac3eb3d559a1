"""The event log and the SSE stream over it, on the mock clock: frames, gathering, bounds, gaps."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest
import trio

from stepline.web._events import CHUNK_BYTES, CHUNK_EVENTS, EventLog
from stepline.web._share import LoopShare
from stepline.web._stream import GATHER, messages


def emit(log: EventLog, count: int, job: str = "j1", size: int = 0) -> None:
    for _ in range(count):
        log.append(
            {"event": "log", "job": job},
            b'{"event":"log","job":"%s","x":"%s"}\n'
            % (
                job.encode(),
                b"x" * size,
            ),
        )


def ids(chunk: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^id: (\d+)$", chunk, re.MULTILINE)]


def test_frames_are_encoded_once_and_a_job_is_filtered() -> None:
    log = EventLog()
    emit(log, 2, "j1")
    emit(log, 1, "j2")
    chunk, last = log.read(0)
    assert chunk.startswith(b'id: 1\ndata: {"event":"log","job":"j1"')
    assert (ids(chunk), last) == ([1, 2, 3], 3)
    chunk, last = log.read(0, "j2")
    assert (ids(chunk), last) == ([3], 3)
    assert log.read(3) == (b"", 3)


def test_a_read_is_bounded_in_events_and_in_bytes() -> None:
    log = EventLog()
    emit(log, CHUNK_EVENTS + 5)
    chunk, last = log.read(0)
    assert (len(ids(chunk)), last) == (CHUNK_EVENTS, CHUNK_EVENTS)
    big = EventLog()
    emit(big, 8, size=CHUNK_BYTES // 3)
    chunk, last = big.read(0)
    assert len(chunk) <= CHUNK_BYTES
    assert ids(chunk) == list(range(1, last + 1))
    assert 1 <= last < 8
    huge = EventLog()
    emit(huge, 2, size=CHUNK_BYTES * 2)  # one frame over the bound still goes, alone
    assert ids(huge.read(0)[0]) == [1]


def test_the_ring_drops_the_oldest() -> None:
    log = EventLog(keep=3)
    emit(log, 5)
    assert log.first_id == 3
    chunk, last = log.read(0)
    assert (ids(chunk), last) == ([3, 4, 5], 5)


async def take(stream: AsyncGenerator[bytes, None]) -> bytes:
    return await stream.__anext__()


async def test_the_kept_events_go_at_once_and_later_ones_gathered(
    autojump_clock: trio.abc.Clock,
) -> None:
    log = EventLog()
    emit(log, 3)
    async with aclosing(messages(log, 0, None, share=LoopShare(), phase=0.1)) as stream:
        assert await take(stream) == b"retry: 1000\n\n"
        start = trio.current_time()
        assert ids(await take(stream)) == [1, 2, 3]
        assert trio.current_time() == start  # the replay waits for nothing

        async def later() -> None:
            await trio.sleep(0.01)
            emit(log, 2)
            await trio.sleep(0.01)
            emit(log, 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            assert ids(await take(stream)) == [4, 5, 6]  # one write for both moments
        assert (trio.current_time() - 0.1) % GATHER == pytest.approx(0)  # at the stream's phase


async def test_a_reader_left_behind_the_ring_is_told_what_it_missed(
    autojump_clock: trio.abc.Clock,
) -> None:
    log = EventLog(keep=4)
    async with aclosing(messages(log, 0, None, share=LoopShare())) as stream:
        await take(stream)  # retry
        emit(log, 10)
        assert await take(stream) == b": events 1 to 6 are no longer kept\n\n"
        assert ids(await take(stream)) == [7, 8, 9, 10]
        emit(log, 10)  # while the client was slow: 11-16 are gone by its next read
        assert await take(stream) == b": events 11 to 16 are no longer kept\n\n"
        assert ids(await take(stream)) == [17, 18, 19, 20]


async def test_a_stream_ends_once_the_log_closes_and_all_was_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    log = EventLog()
    async with aclosing(messages(log, 0, "j2", share=LoopShare())) as stream:
        await take(stream)
        emit(log, 1, "j1")
        emit(log, 1, "j2")
        log.close()
        assert ids(await take(stream)) == [2]
        with pytest.raises(StopAsyncIteration):
            await take(stream)
