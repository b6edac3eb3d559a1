"""Waiting on a job's event history from trio code.

:class:`~stepline.client._history.EventHistory` is pure data; a :class:`Feed` adds a parking lot
per job
so that ``wait()`` and ``events()`` of a trio handle sleep until *that* job's history grows, and
an event wakes only the tasks that care about its job. The in-process API
(:mod:`stepline.client._api`) and :class:`stepline.AsyncClient` both use it.

``closed`` covers the client's case where the history can stop growing before ``finished``
arrives (the ``stepline serve`` child died): waiters then get the exception it holds.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..wire._events import Event
from ._history import EventHistory, HistoryReader

__all__ = ["Feed", "FeedEvents"]


class Feed(EventHistory):
    """An event history that trio tasks can wait on."""

    def __init__(self, job: str, capacity: int) -> None:
        super().__init__(job, capacity)
        self._changed = trio.lowlevel.ParkingLot()
        self._broken: Callable[[], BaseException] | None = None

    def append(self, ev: Event) -> None:
        super().append(ev)
        self._changed.unpark_all()

    def close(self, error: Callable[[], BaseException]) -> None:
        """No more events will come: waiters raise ``error()`` (unless ``finished`` came)."""
        self._broken = error
        self._changed.unpark_all()

    async def next_event(self, reader: HistoryReader) -> Event | None:
        """The reader's next event, waiting for it; None once the reader has handed out
        ``finished``."""
        await trio.lowlevel.checkpoint()
        while (ev := reader.pop()) is None and not reader.ended:
            await self._park()
        return ev

    async def wait_done(self) -> Event:
        """The job's ``finished`` event, once it has arrived."""
        await trio.lowlevel.checkpoint()
        while self.finished is None:
            await self._park()
        return self.finished

    async def _park(self) -> None:
        if self._broken is not None:
            raise self._broken()
        await self._changed.park()


class FeedEvents:
    """The async iterator behind a handle's ``events()``. A class rather than an async
    generator: a consumer that breaks out early leaves nothing to finalize."""

    def __init__(self, feed: Feed) -> None:
        self._feed = feed
        self._reader = HistoryReader(feed)

    def __aiter__(self) -> FeedEvents:
        return self

    async def __anext__(self) -> Event:
        ev = await self._feed.next_event(self._reader)
        if ev is None:
            raise StopAsyncIteration
        return ev
