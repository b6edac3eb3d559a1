"""Taking queued jobs and starting them: the worker loop, and the run lane's dispatch.

Why a module of its own: the executor (:mod:`stepline.engine._executor`) *accepts* jobs and
puts them on the queue; this module *takes* them off. Two takers share the queue and the
``--workers`` slots (:mod:`stepline.engine._slots`): ``workers`` worker tasks, each running one
job at a time inside its cancel scope, and, with the run lane (:mod:`stepline.engine._run_lane`),
the spawners' hand-over, which starts the queue's next job itself when a lane job frees its slot
(:meth:`Dispatcher.lane_slot_freed`). Who starts the next job, in what order, and under which
slot is one decision, so the slot gate around a worker's take and the lane's dispatch live
together here rather than among the executor's commands.

How it meets the executor: the executor builds one :class:`Dispatcher` over the objects they
share (the job table, the queue, the slots, the lot where submitters wait for room), gives it
the lane (:attr:`Dispatcher.lane`; the lane's "slot freed" callback is
:meth:`Dispatcher.lane_slot_freed`), starts its workers in its own nursery
(:meth:`Dispatcher.start_workers`), and, with ``--state``, hands it the durable state
(:meth:`Dispatcher.use_durable`). The executor reads :attr:`Dispatcher.lane` (a submit may
start a lane job at once) and :attr:`Dispatcher.write_ahead`; nothing else crosses.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from ._execution import INTERRUPTED, conclude, execute, finish_interrupted, may_be_interrupted
from ._jobs import Job, JobState, JobTable

if TYPE_CHECKING:
    from ..wire._outbox import Outbox
    from ._durable import DurableState
    from ._interpret import Services
    from ._queue import JobQueue
    from ._run_lane import RunLane
    from ._slots import Slots
    from ._workspace import WorkspacePool

__all__ = ["Dispatcher"]

_FAIRNESS = 32  # a worker yields to the scheduler at least once every this many jobs


class Dispatcher:
    """Takes jobs from ``queue`` and starts them: on a worker, or on :attr:`lane` if it takes
    them, each within a slot of ``slots`` (module docstring). ``room``: the lot where submitters
    wait for a queue slot, woken whenever a job leaves the queue."""

    __slots__ = (
        "_artifacts",
        "_dispatching",
        "_outbox",
        "_queue",
        "_room",
        "_services",
        "_slots",
        "_table",
        "_workspaces",
        "lane",
        "write_ahead",
    )

    def __init__(
        self,
        table: JobTable,
        queue: JobQueue,
        slots: Slots,
        room: trio.lowlevel.ParkingLot,
        services: Services,
        workspaces: WorkspacePool,
        outbox: Outbox,
        *,
        artifacts: str,
    ) -> None:
        self._table = table
        self._queue = queue
        self._slots = slots
        self._room = room
        self._services = services
        self._workspaces = workspaces
        self._outbox = outbox
        self._artifacts = artifacts
        # Plain `run` jobs without a task each (_run_lane.py); set by the executor when it has one
        self.lane: RunLane | None = None
        self.write_ahead: DurableState | None = None  # set when steps wait for their start
        self._dispatching = False  # lane_slot_freed is starting a job (it must not recurse)

    def use_durable(self, durable: DurableState) -> None:
        """With ``--state``: no lane (its jobs' transitions are not written ahead: the worker
        path's are), and with ``write_ahead_start`` a job's steps wait for its start's commit."""
        self.lane = None
        self.write_ahead = durable if durable.write_ahead_start else None

    def start_workers(self, nursery: trio.Nursery, workers: int) -> None:
        """Start ``workers`` worker tasks in ``nursery``; they end once the queue is closed and
        empty (``JobQueue.close``)."""
        for _ in range(workers):
            nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        """Run jobs until the queue is closed and empty, inside one cancel scope at a time.

        Entering a fresh ``CancelScope`` per job was a sixth of a trivial job's cost, and a scope
        can be entered only once. So consecutive jobs share the worker's scope — one job runs in
        it at a time, so it is still that job's one scope, cancelled by its ``cancel`` and bounded
        by its deadline — and the worker opens a new scope only after one has been cancelled.
        """
        ended = False
        while not ended:
            running: list[Job] = []  # the job inside the current scope, if any
            try:
                with trio.CancelScope() as scope:
                    ended = await self._run_jobs(scope, running)
            except BaseException:
                # Cancelled from outside (an embedding program's nursery): the job still gets
                # its one `finished` before the cancellation goes on.
                message = "executor was cancelled"
                for job in running:
                    finish_interrupted(self._table, job, JobState.CANCELLED, message)
                raise
            for job in running:  # the scope caught this job's cancel or deadline
                conclude(self._table, job, INTERRUPTED)

    async def _run_jobs(self, scope: trio.CancelScope, running: list[Job]) -> bool:
        """Run jobs in ``scope``: True once the queue has ended, False when the scope is spent."""
        taken = 0
        while True:
            # A job already waiting is taken without a scheduler pass (``receive`` always yields):
            # for trivial jobs that pass was a fifth of the cost. A checkpoint every _FAIRNESS
            # jobs keeps the reader, the writer and cancels flowing meanwhile.
            slotted = self.lane is not None and await self._slot_first()
            job = self._slots.handed.popleft() if self._slots.handed else None
            if job is None and taken % _FAIRNESS:
                job = self._queue.take_nowait()
            if job is None:
                if (job := await self._queue.take()) is None:
                    return True  # the queue is closed and empty
                slotted = False  # (lane jobs may have taken every slot while it waited)
            taken += 1
            if self._room:
                self._room.unpark_all()  # a submitter waits for the slot just freed
            if job.state is not JobState.QUEUED:
                continue  # a tombstone: cancelled while queued
            if self.lane is not None and await self._lane_took(job, slotted):
                continue
            running.append(job)
            self._table.start(job, scope)
            if self.write_ahead is not None:
                await self.write_ahead.wait_recorded()  # --on-restart fail
            outcome = await execute(job, self._services, self._workspaces, self._artifacts)
            running.clear()
            conclude(self._table, job, outcome)
            self._slots.released()  # a worker waiting for a slot since lane jobs took them all
            if may_be_interrupted(job):
                if scope.cancel_called:
                    return False  # cancelled too late to interrupt anything: it would hit the next
                if job.spec.timeout is not None:
                    scope.deadline = math.inf  # (trio's deadline setter is not free: only if set)
            if self._outbox.congested:
                # A `finished` may carry megabytes of output: no new job until the reader has
                # caught up, or an unread stdout would hold every job's output (_outbox.py).
                await self._outbox.wait_writable()

    async def _slot_first(self) -> bool:
        """With the run lane, before taking a job: while lane jobs hold every slot, wait for
        one (``_slots.py``), so that meanwhile the spawners' hand-over starts the queue's next
        lane jobs itself (:meth:`lane_slot_freed`). True: this worker was given a slot."""
        if self._slots.free():
            return False
        await self._slots.wait(None)
        return True

    def lane_slot_freed(self) -> None:
        """A lane job ended (in the spawners' hand-over, with no task woken): its slot goes to
        the queue's next job, started here if the lane takes it, else handed to a worker.
        Jobs held by workers, or handed to them, are older: they go first."""
        slots, lane = self._slots, self.lane
        if lane is not None and not (slots.holding or slots.handed or self._dispatching):
            self._dispatching = True  # a lane start that ends at once must not recurse here
            try:
                while (job := self._queue.take_nowait()) is not None:
                    if self._room:
                        self._room.unpark_all()
                    if job.state is not JobState.QUEUED:
                        continue  # a tombstone
                    step = lane.takes(job.spec)
                    if step is None:
                        slots.handed.append(job)  # for the worker the slot is given to
                        break
                    lane.start(job, step)
                    return
            finally:
                self._dispatching = False
        slots.released()

    async def _lane_took(self, job: Job, slotted: bool) -> bool:
        """With the run lane: unless ``slotted`` (given a slot), wait for one (lane jobs hold
        slots, not workers: ``_slots.py``), then start ``job`` on the lane if it takes it.
        False: the worker runs it."""
        lane = self.lane
        assert lane is not None
        if not slotted and not self._slots.free():
            await self._slots.wait(job)
            if self._room:
                self._room.unpark_all()  # the job held while waiting has left the queue
            if job.state is not JobState.QUEUED:
                return True  # cancelled while this worker waited: nothing to run
        step = lane.takes(job.spec)
        if step is None:
            return False
        lane.start(job, step)
        return True
