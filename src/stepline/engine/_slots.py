"""The ``--workers`` bound when jobs also run without a worker: the run lane's.

A worker runs one job at a time, so with workers alone the bound holds by itself. A job of the
run lane (:mod:`stepline.engine._run_lane`) runs on a spawner thread and in the spawners'
hand-over instead, and holds a slot without holding a worker: the workers are then idle while
their slots are taken. So a worker asks :meth:`Slots.wait` before it takes a job from the
queue, and parks while every slot is taken; and, should lane jobs have taken the slots while
it waited on an empty queue, again after (holding the job it took, still queued).

While workers wait, the queue's next jobs are started by the spawners' hand-over itself: a
lane job that ends there starts the next queued job on the lane if the lane takes it, with no
task woken (``Dispatcher.lane_slot_freed``); a job the lane does not take is *handed* to the
worker the slot is given to (:attr:`Slots.handed`, taken before the queue).

Order: a job taken from the queue earlier starts earlier. Waiting workers park in one FIFO
:class:`trio.lowlevel.ParkingLot`; a slot freed while one waits is *promised* to the first
(:meth:`Slots.released`), so that nobody else (another worker back from its job, a submit
that would start a job at once) takes it before that worker wakes. A submit starts a job at
once only when no job is queued, and a waiting worker's job still counts as queued in the job
table, so a submit never overtakes it either.

The queue's bound: a job held by a waiting worker, or handed to one, has left the queue's
channel but is still queued; :meth:`Slots.held` lets the executor count it against ``--queue``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from ._states import JobState

if TYPE_CHECKING:
    from ._jobs import Job, JobTable

__all__ = ["Slots"]


class Slots:
    """The ``workers`` slots of ``table``'s running jobs, taken by workers and the run lane."""

    __slots__ = ("_lot", "_promised", "_table", "_workers", "handed", "holding")

    def __init__(self, table: JobTable, workers: int) -> None:
        self._table = table
        self._workers = workers
        self._lot = trio.lowlevel.ParkingLot()  # workers waiting for a slot, first come first
        self._promised = 0  # slots freed for waiting workers that have not woken yet
        self.holding: set[Job] = set()  # the jobs those workers took from the queue
        # jobs the spawners' hand-over took from the queue for a worker (not the lane's)
        self.handed: deque[Job] = deque()

    def free(self) -> bool:
        """Whether a job may start now: a slot is free and no worker waits for one."""
        return not self._lot and self._table.running_count + self._promised < self._workers

    async def wait(self, job: Job | None) -> None:
        """Until a slot is this worker's; ``job``: the job it took from the queue and holds
        meanwhile (None: it takes one afterwards). ``job`` may have been cancelled meanwhile:
        the caller looks."""
        if self.free():
            return
        if job is not None:
            self.holding.add(job)
        try:
            await self._lot.park()
            self._promised -= 1  # the slot released() promised is this worker's now
        finally:
            if job is not None:
                self.holding.discard(job)

    def released(self) -> None:
        """A job ended: its slot goes to the first waiting worker, if one waits."""
        if self._lot:
            self._promised += 1
            self._lot.unpark()

    def held(self) -> int:
        """Jobs out of the queue's channel but not started: held or handed to workers."""
        return len(self.holding) + len(self.handed)

    def held_queued(self) -> int:
        """Of :meth:`held`, those still queued (cancelled ones are not counted)."""
        held = (*self.holding, *self.handed)
        return sum(1 for job in held if job.state is JobState.QUEUED)
