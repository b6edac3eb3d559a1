"""The job queue: one bounded trio memory channel, and how many jobs it holds.

Every job goes in with :meth:`JobQueue.put_nowait` (or :meth:`~JobQueue.put`) and out with
:meth:`~JobQueue.take_nowait` (or :meth:`~JobQueue.take`), so the count kept here is exact.

Why keep a count when the channel has ``statistics()``? That builds a frozen attrs object per
call, about ten times the cost of a length, and a submit asks whether the queue is full every
time (the instruction counts are in NOTES.md, Performance).

The queue holds :class:`~stepline.engine._jobs.Job` records, some of which may be tombstones: jobs
cancelled while queued, skipped by the worker that takes them. :meth:`~JobQueue.compact` drops
them when their slots are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._jobs import Job

__all__ = ["JobQueue"]


class JobQueue:
    """A bounded FIFO of jobs shared by every worker (trio allows many receivers on a channel)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._send, self._receive = trio.open_memory_channel["Job"](size)
        self._held = 0

    def __len__(self) -> int:
        """Jobs in the queue, tombstones included."""
        return self._held

    def put_nowait(self, job: Job) -> None:
        """Queue ``job``; raises ``trio.WouldBlock`` if full, ``ClosedResourceError`` if closed."""
        self._send.send_nowait(job)
        self._held += 1

    async def put(self, job: Job) -> None:
        """Queue ``job``, waiting for room; raises ``trio.ClosedResourceError`` when closed."""
        await self._send.send(job)
        self._held += 1

    def take_nowait(self) -> Job | None:
        """The next job if one is waiting, else None (none waiting, or closed and empty)."""
        try:
            job = self._receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        self._held -= 1
        return job

    async def take(self) -> Job | None:
        """The next job, waiting for one; None once the queue is closed and empty."""
        try:
            job = await self._receive.receive()
        except trio.EndOfChannel:
            return None
        self._held -= 1
        return job

    def close(self) -> None:
        """No more jobs: takers get what is held, then None."""
        self._send.close()

    def compact(self, live: Callable[[Job], bool]) -> None:
        """Drop the jobs that are not ``live``, keeping the rest in order. Synchronous: atomic."""
        kept: list[Job] = []
        while (job := self.take_nowait()) is not None:
            if live(job):
                kept.append(job)
        for job in kept:
            self.put_nowait(job)
