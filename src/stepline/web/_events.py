"""The event log behind ``GET /events``: every event stdout got, numbered, the latest kept.

Server-Sent Events need an id per event so that a client reconnecting with ``Last-Event-ID``
gets what it missed. The front numbers events as they are emitted (1, 2, ...) and keeps the
newest ones in a ring bounded in count and in bytes, so a reconnect replays everything still
kept; older events are gone and the client is told where the kept log starts. Each SSE client
reads the ring at its own pace and waits on one parking lot for new events: a slow client holds
back only itself, never the executor or the other clients.

An event is kept as its SSE frame (``id: N``, ``data:`` the stdout line), encoded once when it
is appended: every unfiltered client sends the same bytes, so a client's share of the fan-out
is one ``join`` of frames per write, not one encoding per event per client.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import eq
from typing import Final

import trio

from ..wire._events import Event

__all__ = ["CHUNK_BYTES", "CHUNK_EVENTS", "EventLog"]

KEEP_EVENTS: Final = 10_000
KEEP_BYTES: Final = 16 << 20
CHUNK_EVENTS: Final = 4_000  # events one read returns at most
CHUNK_BYTES: Final = 1 << 18  # bytes one read returns at most (unless one frame is larger)


class EventLog:
    """Numbered events (the newest :data:`KEEP_EVENTS`, at most :data:`KEEP_BYTES`).

    The ring is three parallel deques (frames, their jobs, the running total of frame bytes
    at each), so a read is C-level slicing, filtering and joining: no Python code runs per
    event per reader.
    """

    def __init__(self, *, keep: int = KEEP_EVENTS, keep_bytes: int = KEEP_BYTES) -> None:
        self._keep = keep
        self._keep_bytes = keep_bytes
        self._frames: deque[bytes] = deque()
        self._jobs: deque[str | None] = deque()
        self._ends: deque[int] = deque()  # bytes appended in all, up to and with this frame
        self._appended = 0
        self._bytes = 0
        self.last_id = 0
        self._new = trio.lowlevel.ParkingLot()
        self.closed = False
        self.readers = 0  # streams opened so far (spreads their write times, see _stream)

    # -- writing (synchronous: called from the outbox's emit) --------------------------------

    def append(self, event: Event, line: bytes) -> None:
        job = event.get("job")
        self.append_line(job if isinstance(job, str) else None, line)

    def append_line(self, job: str | None, line: bytes) -> None:
        """:meth:`append` for an event known only by its line and its job (the front's own
        process gets them so, over its link, and never parses an event)."""
        self.last_id += 1
        frame = b"id: %d\ndata: %s\n\n" % (self.last_id, line.rstrip(b"\n"))
        self._appended += len(frame)
        self._frames.append(frame)
        self._jobs.append(job)
        self._ends.append(self._appended)
        self._bytes += len(frame)
        while len(self._frames) > self._keep or (self._bytes > self._keep_bytes and self._frames):
            self._bytes -= len(self._frames.popleft())
            self._jobs.popleft()
            self._ends.popleft()
        if self._new:
            self._new.unpark_all()

    def skip(self, count: int) -> None:
        """``count`` events were lost before they reached the log: their ids are used up and
        nothing older is kept, so a reader behind them is told which events it missed."""
        self.last_id += count
        self._frames.clear()
        self._jobs.clear()
        self._ends.clear()
        self._bytes = 0
        if self._new:
            self._new.unpark_all()

    def close(self) -> None:
        """No more events: every waiting reader returns."""
        self.closed = True
        self._new.unpark_all()

    # -- reading -----------------------------------------------------------------------------

    @property
    def first_id(self) -> int:
        """The id of the oldest event still kept (``last_id + 1`` when none is)."""
        return self.last_id - len(self._frames) + 1

    def read(self, after: int, job: str | None = None) -> tuple[bytes, int]:
        """The frames of kept events above ``after`` (``job``'s only, if given), joined: at most
        :data:`CHUNK_EVENTS` events and :data:`CHUNK_BYTES` bytes of the log (one frame at
        least), and the id of the last event looked at (``after`` when none is kept). Ids are
        consecutive, so the first one's place in the ring is known without a search."""
        first = self.first_id
        start = max(0, after + 1 - first)
        if start >= len(self._frames):
            return b"", max(after, first - 1)
        stop = min(len(self._frames), start + CHUNK_EVENTS)
        budget = self._ends[start] - len(self._frames[start]) + CHUNK_BYTES
        stop = max(start + 1, bisect_right(self._ends, budget, start, stop))
        frames: Iterator[bytes] = islice(self._frames, start, stop)
        if job is not None:
            frames = compress(frames, map(eq, islice(self._jobs, start, stop), repeat(job)))
        return b"".join(frames), first + stop - 1

    async def wait_beyond(self, after: int) -> None:
        """Return once an event above ``after`` exists, or the log is closed."""
        while self.last_id <= after and not self.closed:
            await self._new.park()
