"""Where events go: the outbox, and the one task that writes it to a stream.

Producers call :meth:`Outbox.emit` synchronously, so a state change and its event are one atomic
step (see :mod:`stepline.engine._jobs`). A single writer task takes everything pending at once,
encodes the batch with orjson and writes it with one ``send_all``: events are never interleaved or
half-written, and batching is what makes the writer fast (field notes: about 96 k events/s
batched, against 29 k/s with a lock around per-event writes).

Memory stays bounded without ever dropping a lifecycle event: ``accepted``/``started``/``finished``
are at most a few per job, and jobs are bounded by the queue plus the workers. The unbounded
kinds wait for room instead — the command reader and ``log`` steps call :meth:`wait_writable`
before producing more, so a driver that stops reading stdout eventually stops stepline reading
stdin — and heartbeats are skipped while the outbox is congested.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import orjson
import trio

from ._events import Event

__all__ = ["HIGH_WATER", "Outbox", "StreamOutbox", "encode_events"]

log = logging.getLogger("stepline")

HIGH_WATER = 4096  # pending events above which producers of unbounded kinds wait


class Outbox(Protocol):
    """The sink the executor writes events into."""

    def emit(self, event: Event) -> None: ...

    async def wait_writable(self) -> None: ...

    @property
    def congested(self) -> bool: ...


def encode_events(events: list[Event]) -> bytes:
    """Encode a batch as JSON lines; a rare unencodable event is repaired, never dropped."""
    try:
        return b"".join([orjson.dumps(ev, option=orjson.OPT_APPEND_NEWLINE) for ev in events])
    except (TypeError, orjson.JSONEncodeError):
        return b"".join([_encode_carefully(ev) for ev in events])


def _encode_carefully(ev: Event) -> bytes:
    try:
        return orjson.dumps(ev, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        pass
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
    """An :class:`Outbox` whose writer task writes JSON lines to a trio ``SendStream``."""

    def __init__(self, stream: trio.abc.SendStream, *, high_water: int = HIGH_WATER) -> None:
        self._stream = stream
        self._high_water = high_water
        self._pending: list[Event] = []
        self._writer_idle = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._closing = False
        self.broken = False  # the reader of our stream went away (broken pipe)
        self.broken_event = trio.Event()
        self.written = 0  # events written so far

    def emit(self, event: Event) -> None:
        if self._closing:
            return  # after the last event (``bye``) or a broken pipe nothing more is written
        self._pending.append(event)
        if len(self._pending) == 1:
            self._writer_idle.unpark_all()

    @property
    def congested(self) -> bool:
        return len(self._pending) >= self._high_water

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
            batch, self._pending = self._pending, []
            self._room.unpark_all()
            try:
                await self._stream.send_all(encode_events(batch))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._on_broken()
                return
            self.written += len(batch)

    def _on_broken(self) -> None:
        log.warning("stdout was closed by its reader; stopping")
        self.broken = True
        self.broken_event.set()
        self._pending.clear()
        self.close()
