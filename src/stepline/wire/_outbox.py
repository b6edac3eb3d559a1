"""Where events go: the outbox, and the one task that writes it to a stream.

Producers call :meth:`Outbox.emit` synchronously, so a state change and its event are one atomic
step (see :mod:`stepline.engine._jobs`). A single writer task takes everything pending at once
and writes it with as few ``send_all`` calls as it can: events are never interleaved or
half-written, and batching is what makes the writer fast (field notes: about 96 k events/s
batched, against 29 k/s with a lock around per-event writes).

Pending lines are appended to one ``bytearray``, never kept as a list of ``bytes``: each result of
``orjson.dumps`` (3.13) holds a 4 KiB allocation whatever its length, so a list of small encoded
events costs ~30 times their size in memory and its allocations cost ~20 µs an event, ten times
the encoding itself (NOTES.md, Performance). Appended and dropped at once, the buffer is reused.

Memory is bounded in bytes, and no lifecycle event is ever dropped. Each event is encoded as it is
emitted, so the outbox knows exactly how many bytes it holds; once they reach
:data:`HIGH_WATER_BYTES` it is *congested*, and every producer that can wait does, before making
more: the command reader before each command, ``log`` steps before each line, workers before
taking their next job (a job's ``finished`` carries its whole output: 2 MiB for a ``run`` step
at its caps), schedules before each firing. A driver that stops reading stdout therefore stops
stepline reading stdin and starting jobs, with at most about one event per producer beyond the
mark. Heartbeats are skipped while the outbox is congested.

Counting events was not enough: 300 jobs of 2 MiB output each are only 900 events, far below
any sensible count, and their ``finished`` events took an unread stepline from 29 to over
600 MiB (see NOTES.md).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from typing import Final, Protocol

import orjson
import trio

from ._events import Event

__all__ = [
    "HIGH_WATER_BYTES",
    "Outbox",
    "StreamOutbox",
    "TappedOutbox",
    "encode_event",
    "encode_events",
]

log = logging.getLogger("stepline")

HIGH_WATER_BYTES: Final = 1 << 20
"""Encoded bytes pending above which producers that can wait do (about 6,000 small events)."""

_WRITE_CHUNK: Final = 1 << 16  # small events are joined into writes of about this size


class Outbox(Protocol):
    """The sink the executor writes events into."""

    def emit(self, event: Event) -> None: ...

    async def wait_writable(self) -> None: ...

    @property
    def congested(self) -> bool: ...


def encode_event(event: Event) -> bytes:
    """One event as a JSON line; a rare unencodable event is repaired, never dropped."""
    try:
        return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        return _encode_carefully(event)


def encode_events(events: list[Event]) -> bytes:
    """Encode a batch as JSON lines (see :func:`encode_event`), appended to one buffer: a list
    of ``orjson`` results to join costs ten times more (see the module docstring)."""
    data = bytearray()
    for ev in events:
        data += encode_event(ev)
    return bytes(data)


def _encode_carefully(ev: Event) -> bytes:
    try:
        return orjson.dumps(ev, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        pass
    import json  # start-up time: only an event orjson refused comes here

    try:  # stdlib json nests deeper than orjson's 255 levels
        return json.dumps(ev, default=str, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    except (TypeError, ValueError, RecursionError):
        log.exception("event could not be encoded; its payload is replaced")
        keep: dict[str, object] = {
            k: v for k, v in ev.items() if isinstance(v, str | int | float | bool | None)
        }
        keep["error"] = {"type": "internal", "message": "event payload could not be encoded"}
        return orjson.dumps(keep, option=orjson.OPT_APPEND_NEWLINE)


class StreamOutbox:
    """An :class:`Outbox` whose writer task writes JSON lines to a trio ``SendStream``.

    ``congested`` is a plain attribute, kept up to date as bytes come and go: the workers and
    the reader test it once per job and per command.
    """

    def __init__(self, stream: trio.abc.SendStream, *, high_water: int = HIGH_WATER_BYTES) -> None:
        self._stream = stream
        # a pipe or file: written directly while it takes the bytes at once (_send)
        self._fd_stream = stream if isinstance(stream, trio.lowlevel.FdStream) else None
        self._high_water = high_water
        self._pending = bytearray()  # encoded lines emitted and not yet taken by the writer
        self._bytes = 0  # encoded bytes emitted and not yet written (the batch being written too)
        self.congested = False
        self._writer_idle = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._closing = False
        self.broken = False  # the reader of our stream went away (broken pipe)
        self.broken_event = trio.Event()
        self.written = 0  # events written so far
        self.emitted = 0  # events emitted so far (the first `written` of them are out)
        self._progress = trio.lowlevel.ParkingLot()  # wait_written, after each write

    def emit(self, event: Event) -> None:
        self.emit_lines(encode_event(event), 1)

    def emit_line(self, data: bytes) -> None:
        """:meth:`emit` for an event already encoded as one JSON line (``--state``'s event log:
        the line it committed is the line it writes)."""
        self.emit_lines(data, 1)

    def emit_lines(self, data: bytes, count: int) -> None:
        """:meth:`emit` for ``count`` events already encoded as JSON lines, in order (a job run
        at once writes its three together: ``JobTable.complete_value``)."""
        if self._closing:
            return  # after the last event (``bye``) or a broken pipe nothing more is written
        self.emitted += count
        if not self._pending:
            self._writer_idle.unpark_all()
        self._pending += data
        self._bytes += len(data)
        if self._bytes >= self._high_water:
            self.congested = True

    @property
    def pending_bytes(self) -> int:
        """Encoded bytes emitted and not yet written."""
        return self._bytes

    async def wait_written(self, count: int) -> None:
        """Return once ``count`` events were written, or nothing more will be."""
        while self.written < count and not self.broken:
            await self._progress.park()

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()
        while self.congested and not self._closing:
            await self._room.park()

    def close(self) -> None:
        """No more events: the writer flushes what is pending and returns."""
        self._closing = True
        self._writer_idle.unpark_all()
        self._room.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: returns once closed and flushed, or when the stream breaks."""
        task_status.started()
        while self._pending or not self._closing:
            if not self._pending:
                await self._writer_idle.park()
                continue
            batch, self._pending = self._pending, bytearray()
            try:
                await self._write(batch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._on_broken()
                return

    async def _write(self, batch: bytearray) -> None:
        """Write ``batch`` in chunks of at most :data:`_WRITE_CHUNK` bytes, freeing room as each
        chunk goes out (deleting a bytearray's head is O(1) in CPython: no shifting).

        Every event is one line, so the events a chunk completes are its newlines.
        """
        while batch:
            chunk = batch if len(batch) <= _WRITE_CHUNK else batch[:_WRITE_CHUNK]
            size = len(chunk)
            await self._send(chunk)
            if chunk is batch:
                batch = bytearray()
            else:
                del batch[:size]
            self.written += chunk.count(b"\n")
            self._wrote(size)
            if self._progress:
                self._progress.unpark_all()

    async def _send(self, chunk: bytearray) -> None:
        """``send_all``, tried first as one non-blocking ``write`` where the stream is a trio
        ``FdStream`` (stdout): ``send_all`` begins with a checkpoint, a task switch and a pass
        of the scheduler for every batch, which a process job, whose ``finished`` goes out
        alone, paid once each (NOTES.md, Performance). Only what the pipe does not take at
        once goes through ``send_all``, which waits for room. The writer is this stream's one
        user; its descriptor is asked each time, so a closed stream is never written."""
        fd = -1 if self._fd_stream is None else self._fd_stream.fileno()
        if fd >= 0:
            try:
                done = os.write(fd, chunk)
            except BlockingIOError:
                done = 0
            except OSError as exc:  # as send_all reports it
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("file was already closed") from None
                raise trio.BrokenResourceError from exc
            if done == len(chunk):
                return
            chunk = chunk[done:]
        await self._stream.send_all(chunk)

    def _wrote(self, size: int) -> None:
        self._bytes -= size
        if self.congested and self._bytes < self._high_water:
            self.congested = False
            self._room.unpark_all()

    def _on_broken(self) -> None:
        log.warning("stdout was closed by its reader; stopping")
        self.broken = True
        self.broken_event.set()
        self._progress.unpark_all()
        self._pending.clear()
        self._bytes = 0
        self.close()


class TappedOutbox(StreamOutbox):
    """A :class:`StreamOutbox` that also hands what it writes to a tap: each event with its
    encoded line (``tap``), and lines already encoded as they come, many at a time
    (``tap_lines``: a job run at once, ``--state``'s event log).

    A subclass rather than a hook in :meth:`StreamOutbox.emit`, so the plain stdout path pays
    nothing for a feature it does not use. The tap (the HTTP front) sees exactly what stdout
    gets, in the same order, with the line encoded once for both; lines are not parsed here
    (what the front needs of them, it reads in its own process).
    """

    def __init__(
        self,
        stream: trio.abc.SendStream,
        tap: Callable[[Event, bytes], None],
        tap_lines: Callable[[bytes, int], None],
        *,
        high_water: int = HIGH_WATER_BYTES,
    ) -> None:
        super().__init__(stream, high_water=high_water)
        self._tap = tap
        self._tap_lines = tap_lines

    def emit(self, event: Event) -> None:
        if self._closing:
            return
        data = encode_event(event)
        super().emit_lines(data, 1)
        self._tap(event, data)

    def emit_lines(self, data: bytes, count: int) -> None:
        if self._closing:
            return
        super().emit_lines(data, count)
        self._tap_lines(data, count)
