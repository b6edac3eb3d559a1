"""Durable submits from one command stream, pipelined so that they share commits.

``stepline serve`` reads its commands one at a time and answers each before the next, so replies
come in command order (clients rely on it: :mod:`stepline.client._session`). With ``--state`` a
submit
must wait for its record to be committed before ``accepted``; awaiting that per submit would cost
one ``fsync`` per job. Instead, consecutive submits are *staged* (validated, given a queue slot and
an id, their records added to the store's open batch) and *settled* together: one commit, then
every ``accepted`` in order.

Order is kept by one rule: anything that answers or looks at state — any other command, an error,
the end of the chunk of input read so far — first settles what is staged. So every event comes
out in the order a sequential reader would produce, and no command can observe a staged job that
is not yet accepted. The input is never held back waiting for more: the reader settles at the end
of each chunk it read, before it waits for the next.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final

import trio

from .._errors import CommandError, StoreFailed
from ..engine._executor import Executor
from ..engine._jobs import Job
from ..spec._validate import NOT_A_VALUE, value_job
from ..wire._commands import Command, PlainSubmit, Submit
from ..wire._events import RequestId, error
from ._admit import StagedJob, accept_staged, complete_values, stage, stage_nowait, stage_value
from ._store import Store
from ._values import StagedValueRun

__all__ = ["MAX_STAGED", "MAX_STAGED_VALUES", "SubmitPipeline"]

log = logging.getLogger("stepline")

MAX_STAGED: Final = 4096
"""Submits staged at most before settling: bounds the latency of the first one's ``accepted``."""

MAX_STAGED_VALUES: Final = 4 * MAX_STAGED
"""Jobs staged at most while all of them are value jobs, whose lines are written after their
commit whoever waits: no ``accepted`` waits on a settle. It bounds the memory they hold (a
record, a row and three lines each), and lets the reader read on through a slow commit (a
loaded machine starves the writer thread: a commit of a few thousand rows took 100-200 ms,
and with a bound of 4,096 the reader waited for it five or six times in a run of 20,000 jobs,
NOTES.md, "--state throughput", Session 8)."""


class ValueBatch:
    """Consecutive bare value jobs completed at once in one batch (:func:`stage_value`, or a
    run of them: ``store/_values.py``), whose records join the table once it is committed. One
    per batch, not one per job."""

    __slots__ = ("gen", "ids", "jobs", "sizes")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.ids: list[str] = []  # their ids
        self.jobs: list[Job] = []
        self.sizes: list[int] = []  # their outputs' encoded sizes


Staged = StagedJob | ValueBatch


class SubmitPipeline:
    """Stages consecutive ``submit`` commands and settles them in one commit."""

    def __init__(self, executor: Executor, store: Store) -> None:
        self._executor = executor
        self._store = store
        self._staged: list[Staged] = []
        self._count = 0  # jobs staged (a run counts its jobs)
        self._waiting = 0  # staged submits that are not value batches: accepted only when settled
        store.on_commit = self._complete_values

    async def offer(self, command: Command, request_id: RequestId) -> bool:
        """Stage a submit (or answer its error); False: not a submit, the caller handles it."""
        if not isinstance(command, Submit):
            return False
        self._settle_committed()
        while self._count + 1 >= self._bound():
            await self._settle_oldest()  # first, so that a value job still takes its lane
        if (
            command.template is None
            and command.params is None
            and self._stage_value(command.job, command.name, request_id)
        ):
            return True
        while self._staged and not self._executor.has_room():
            # Never wait for room while holding slots that settling frees: wait for the oldest
            # staged submit's commit only (the next batch may still be filling), accept what is
            # committed, and let idle workers take it, as between unstaged submits.
            await self._settle_oldest()
            await trio.lowlevel.checkpoint()
        try:
            staged = await stage(
                self._executor,
                self._store,
                command.job,
                template=command.template,
                params=command.params,
                name=command.name,
                request_id=request_id,
            )
        except CommandError as exc:
            await self._refuse(exc.code, exc.message, request_id)
            return True
        except Exception as exc:  # a bug in stepline: report it, keep serving (as dispatch does)
            log.exception("internal error staging %r", command)
            await self._refuse(
                "internal", f"internal error: {type(exc).__name__}: {exc}", request_id
            )
            return True
        self._staged.append(staged)
        self._count += 1
        self._waiting += 1
        while self._count >= MAX_STAGED:
            # As when the queue is full: wait for the oldest commit only, so that the next batch
            # fills while it is written (settling everything would idle the disk and us in turn).
            await self._settle_oldest()
        return True

    def offer_nowait(self, submit: PlainSubmit) -> bool:
        """:meth:`offer` for a plain submit that needs no waiting, without a coroutine (the hot
        path). False, with nothing done, leaves it to :meth:`offer`: the queue is full, the
        staged batch is, or the submit is refused (its error must follow a settle).

        A bare value job that a worker would start now completes in one step, its final row
        and its three events one entry of the open batch (:func:`stage_value`), as it does
        without ``--state``; other submits are staged to be accepted after their commit.
        """
        if self._waiting:  # else only value batches are staged: the store's on_commit settles them
            self._settle_committed()
        if self._count + 1 >= self._bound():
            return False
        if self._stage_value(submit.job, submit.name, submit.request_id):
            return True
        try:
            staged = stage_nowait(
                self._executor,
                self._store,
                submit.job,
                name=submit.name,
                request_id=submit.request_id,
            )
        except Exception:  # WouldBlock, a refusal or a bug: offer() does it again and reports
            return False
        self._staged.append(staged)
        self._count += 1
        self._waiting += 1
        return True

    def _stage_value(self, job: Any, name: str | None, request_id: RequestId) -> bool:
        """Complete a bare value job in one step if a worker would start it now (False:
        nothing done, it is staged as any other submit)."""
        executor, store = self._executor, self._store
        if not executor.takes_values_now() or store.failure:
            return False
        value = value_job(job)
        if value is NOT_A_VALUE:
            return False
        staged = stage_value(executor, store, job, value, name=name, request_id=request_id)
        if staged is None:
            return False
        record, size = staged
        self._add_values([record.id], [record], [size], store.open_gen)
        return True

    def value_run(self) -> StagedValueRun:
        """A run of value jobs staged together (``store/_values.py``), for the reader to use
        run after run; it takes jobs while one submitted now would take the lane."""
        return StagedValueRun(self._executor, self._store, self._add_values, self._values_room)

    def _values_room(self) -> int:
        """How many value jobs a run may stage now: 0 unless one submitted now would take
        the lane (:meth:`offer_nowait` then says what becomes of it)."""
        if not self._executor.takes_values_now() or self._store.failure:
            return 0
        return max(MAX_STAGED_VALUES - 1 - self._count, 0)  # none waits: the lane is open

    def _bound(self) -> int:
        """How many jobs may be staged now: more while none waits for a settle."""
        return MAX_STAGED if self._waiting else MAX_STAGED_VALUES

    def _add_values(self, job_ids: list[str], jobs: list[Job], sizes: list[int], gen: int) -> None:
        """Records of value jobs staged in batch ``gen``, to join the table once it is
        committed (:meth:`_complete_values`)."""
        staged = self._staged
        last = staged[-1] if staged else None
        if type(last) is not ValueBatch or last.gen != gen:
            last = ValueBatch(gen)
            staged.append(last)
        last.ids += job_ids
        last.jobs += jobs
        last.sizes += sizes
        self._count += len(jobs)

    async def settle(self) -> None:
        """Accept everything staged (after its commit), in order; a no-op when nothing is."""
        if not self._staged:
            return
        # Shielded: a record on disk must end as an `accepted` or an error, even when the reader
        # is being cancelled at the end of a shutdown.
        staged, self._staged = self._staged, []
        with trio.CancelScope(shield=True), contextlib.suppress(StoreFailed):
            await self._store.wait_admitted(staged[-1].gen)
        self._accept(staged)

    async def settle_before_reading(self) -> None:
        """Before a read that may wait for input: settle, unless only value batches are staged.

        A staged submit is accepted (and can run) only when settled, so none may wait for the
        next line. A value job is complete already: its lines are written after its commit,
        whoever waits, and its record joins the table then (:meth:`_complete_values`, called
        by the store after each commit). So the reader goes on reading while that commit is
        made, instead of waiting for it each time the input runs dry.
        """
        if self._waiting:
            await self.settle()
        else:
            self._settle_committed()

    def _complete_values(self) -> None:
        """After a commit: the value batches it decided at the head of the staged submits join the
        table (or are refused), as the reader would do at its next submit or command."""
        staged, store = self._staged, self._store
        ready = 0
        while (
            ready < len(staged)
            and isinstance(staged[ready], ValueBatch)
            and store.is_decided(staged[ready].gen)
        ):
            ready += 1
        if ready:
            done, self._staged = staged[:ready], staged[ready:]
            self._accept(done)

    async def _settle_oldest(self) -> None:
        try:
            with trio.CancelScope(shield=True):  # as in settle(): it ends accepted or refused
                await self._store.wait_admitted(self._staged[0].gen)
        except StoreFailed:
            await self.settle()  # refuses what was not written
        self._settle_committed()

    def _settle_committed(self) -> None:
        """Accept, without waiting, the staged submits already committed.

        Commits happen in order, so they are a prefix (as are submits withdrawn after a failed
        commit, which are refused). Doing this at every submit keeps the
        pipeline full: while one batch commits, the next fills, and the reader waits only when
        it has no queue room left.
        """
        store = self._store
        ready = 0
        while ready < len(self._staged) and store.is_decided(self._staged[ready].gen):
            ready += 1
        if ready:
            done, self._staged = self._staged[:ready], self._staged[ready:]
            self._accept(done)

    def _accept(self, staged: list[Staged]) -> None:
        """Accept staged submits whose commit is decided, in order; answer those refused."""
        executor, store = self._executor, self._store
        for item in staged:
            if isinstance(item, ValueBatch):
                self._count -= len(item.jobs)
                for job in complete_values(store, executor.table, item):
                    refusal = StoreFailed(f"job not accepted: {store.failure}")
                    self._refuse_now(refusal, job.request_id)
                continue
            self._count -= 1
            self._waiting -= 1
            outcome = accept_staged(executor, store, item)
            if isinstance(outcome, StoreFailed):
                self._refuse_now(outcome, item.request_id)

    def _refuse_now(self, refusal: CommandError, request_id: RequestId) -> None:
        """A submit whose record was not written (refusals are a suffix: order is kept)."""
        self._executor.outbox.emit(error(refusal.code, refusal.message, request_id))

    async def _refuse(self, code: str, message: str, request_id: RequestId) -> None:
        await self.settle()  # the earlier submits' `accepted` come first
        self._executor.outbox.emit(error(code, message, request_id))
