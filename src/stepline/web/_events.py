"""The event log behind ``GET /events``: every event stdout got, numbered, the latest kept.

Server-Sent Events need an id per event so that a client reconnecting with ``Last-Event-ID``
gets what it missed. The front numbers events as they are emitted (1, 2, ...) and keeps the
newest ones in a ring bounded in count and in bytes, so a reconnect replays everything still
kept; older events are gone and the client is told where the kept log starts. Each SSE client
reads the ring at its own pace and waits on one parking lot for new events: a slow client holds
back only itself, never the executor or the other clients.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Final

import trio

from ..wire._events import Event

__all__ = ["EventLog"]

KEEP_EVENTS: Final = 10_000
KEEP_BYTES: Final = 16 << 20


class EventLog:
    """Numbered events (the newest :data:`KEEP_EVENTS`, at most :data:`KEEP_BYTES`)."""

    def __init__(self, *, keep: int = KEEP_EVENTS, keep_bytes: int = KEEP_BYTES) -> None:
        self._keep = keep
        self._keep_bytes = keep_bytes
        self._ring: deque[tuple[int, str | None, bytes]] = deque()  # (id, job, JSON line)
        self._bytes = 0
        self.last_id = 0
        self._new = trio.lowlevel.ParkingLot()
        self.closed = False

    # -- writing (synchronous: called from the outbox's emit) --------------------------------

    def append(self, event: Event, line: bytes) -> None:
        self.last_id += 1
        job = event.get("job")
        job_id = job if isinstance(job, str) else None
        self._ring.append((self.last_id, job_id, line))
        self._bytes += len(line)
        while len(self._ring) > self._keep or (self._bytes > self._keep_bytes and self._ring):
            self._bytes -= len(self._ring.popleft()[2])
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
        return self._ring[0][0] if self._ring else self.last_id + 1

    def since(self, after: int) -> list[tuple[int, str | None, bytes]]:
        """The kept events with an id above ``after``, oldest first (ids are consecutive, so
        the first one's place in the ring is known without a search)."""
        if not self._ring or after >= self.last_id:
            return []
        return list(islice(self._ring, max(0, after + 1 - self._ring[0][0]), None))

    async def wait_beyond(self, after: int) -> None:
        """Return once an event above ``after`` exists, or the log is closed."""
        while self.last_id <= after and not self.closed:
            await self._new.park()
