"""The store: durable state for ``stepline serve --state``, written in batches to a backend.

What is recorded, and when:

* a job, with its ``accepted``: its id, its name, and the request that rebuilds it
  (:func:`~stepline.store._admit.encode_request`). State ``queued``.
* each state change, as the job table makes it (the store is the table's observer), with the
  event that reports it: ``running`` with ``started``; ``cancelling`` (a running job) with
  ``cancelling``; the final state, its output or error, with ``finished``. Every such event is
  written only once its commit is done (:mod:`stepline.store._eventlog`), so nothing a driver
  has seen is taken back by a crash. With ``--on-restart fail`` the worker also waits for the
  ``running`` record before the steps begin (``write_ahead_start``), so a job that had begun is
  failed as ``interrupted`` after a crash, never run a second time.
* templates, on ``define``; the job id counter, so no id is ever handed out twice.

**A failed commit** (a full disk) is kept and retried, merged with the next batch, after a pause
that doubles up to :data:`RETRY_MAX`: no event of it is written meanwhile, so nothing reported
can be contradicted, and the store works again once the disk has room. Submits are refused
(``store_failed``) while it fails, and those in the failed batch are withdrawn and refused. A
store that is closing gives up after :data:`CLOSE_ATTEMPTS` failures: the jobs whose outcome it
could not record are still unfinished in the state, and the next start recovers them.

**Why batches.** A commit costs one ``fsync`` (see NOTES.md, Durable state) whatever it carries;
a row costs a few microseconds. So nothing commits alone: every write goes into the batch being
filled, and one writer task commits the whole batch while the next batch fills (group commit).
Producers never wait, except a submit, which must see its job durable before ``accepted`` —
and many submits share one commit. How a batch is kept is the backend's business
(:mod:`stepline.store._backend`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import orjson
import trio

from .._errors import StoreFailed
from .._lazy import loading
from ..engine._jobs import Job, JobState
from ..wire._events import Event, RequestId
from ._backend import Backend
from ._eventlog import EventLog, Handover, Plain, SequencedOutbox, Sink
from ._model import DONE_FIELDS, Batch, Snapshot

if TYPE_CHECKING:
    from ..engine._executor import Executor

__all__ = ["WRITER_SWITCH_INTERVAL", "Store", "backend_for", "quick_gil_handoffs"]

log = logging.getLogger("stepline")

CURSOR_DELAY: Final = 0.05
"""Seconds the writer waits for another commit to carry the delivery cursor before it commits
the cursor alone."""

RETRY_FIRST: Final = 0.05
RETRY_MAX: Final = 5.0
"""A failed commit is retried after RETRY_FIRST seconds, doubling up to RETRY_MAX."""

CLOSE_ATTEMPTS: Final = 5
"""Failed commits in a row after which a closing store gives up (about 0.75 s of pauses)."""

CLOSE_FLUSH: Final = 1.0
"""Seconds a closing store waits for stdout to take the last events before it records them
delivered (only a repeat after a restart is at stake)."""


WRITER_SWITCH_INTERVAL: Final = 0.0002
"""Seconds a thread waiting for the GIL lets the event loop keep it before asking for it
(``sys.setswitchinterval``; Python's default is 0.005), while ``serve --state`` runs. The
writer thread takes the GIL back five times per statement (CPython's sqlite3), and while the
loop runs Python without a system call each taking back waited the whole interval: on a quiet
machine a commit of 128 rows took 162 ms for 6.5 ms of CPU, the reader meanwhile staged up to
its bound and then waited for a commit of 16,000 rows. At 200 us: 1.56-1.66x the jobs/s of
20,000 value jobs (NOTES.md, "--state throughput", Session 9)."""

_STATE_NAMES: Final = {state: state.value for state in JobState}
"""A state's stored name: an enum member's ``.value`` is a Python-level descriptor call."""


@contextlib.contextmanager
def quick_gil_handoffs() -> Iterator[None]:
    """While open, a thread waiting for the GIL gets it within :data:`WRITER_SWITCH_INTERVAL`;
    the interval it had is set back at the end. For a process that is the server (``serve``):
    the interval is the whole process's, so embedded use does not change it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(WRITER_SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def backend_for(location: str | os.PathLike[str]) -> Backend:
    """The backend a ``--state`` value names: today a path, an SQLite file."""
    from ._sqlite import SqliteBackend  # start-up time: sqlite3 only when used

    return SqliteBackend(location)


class Store:
    """The durable state of one executor: a batching writer over a backend, its event log, and
    the snapshot loaded at start.

    Create with :meth:`open`, give the executor its outbox with :meth:`sequence`, run :meth:`run`
    in a nursery, :meth:`attach` it to the executor, write what the last run left undelivered
    with :meth:`redeliver`, and :meth:`aclose` it after the last job.
    """

    def __init__(
        self, backend: Backend, snapshot: Snapshot, *, keep: int, write_ahead_start: bool = False
    ) -> None:
        self.backend = backend
        # With --on-restart fail a job's steps begin only once its `running` record is durable,
        # so a job that had begun is never run again after a crash (at most once); with rerun
        # nothing waits, since a job cut off runs again either way (at least once).
        self.write_ahead_start = write_ahead_start
        self.snapshot = snapshot
        self._keep = keep
        # Finished jobs beyond --keep (a smaller --keep than last time) go in the first commit,
        # made once the whole snapshot was loaded and checked.
        prune = snapshot.last_fin - keep
        self._batch = Batch(gen=1, dirty=prune > 0, prune_to=prune if prune > 0 else None)
        self.events = EventLog(snapshot.last_seq)
        self._durable = 0  # every batch up to this one is committed
        self._fin = snapshot.last_fin  # finish numbers continue above the loaded rows
        self._next_number: Callable[[], int] = lambda: snapshot.next_id
        self._wake = trio.lowlevel.ParkingLot()  # the writer, waiting for a dirty batch
        self._committed = trio.lowlevel.ParkingLot()  # submits waiting for their commit
        self._closing = False
        self.commits = 0  # transactions committed: many writes each (see the module docstring)
        # A failed commit (a full disk): the batch is kept and retried, merged with the next,
        # after a growing pause; its submits are withdrawn and refused.
        self._retry: tuple[Batch, Handover] | None = None
        self._failing: str | None = None  # why the last commit failed, until one succeeds
        self._attempts = 0  # failed commits in a row
        self._withdrawn_gen = 0  # submits staged up to this batch and not committed: refused
        self._refused: set[str] = set()  # their job ids, until settled
        self._stopped: str | None = None  # set once: nothing more is written
        # Closing: set once the last batch is committed (or given up) and its events handed to
        # the sink; what follows is housekeeping (the delivery cursor, closing the backend).
        self.flushed = trio.Event()
        self.closed = trio.Event()
        # Called after each commit is decided (done, or failed and withdrawn), once its events
        # were handed to stdout and its waiters woken: serve's pipeline completes value jobs.
        self.on_commit: Callable[[], None] | None = None

    @classmethod
    async def open(
        cls,
        backend: Backend | str | os.PathLike[str],
        *,
        keep: int = 1000,
        write_ahead_start: bool = False,
    ) -> Store:
        """Open a backend (or the SQLite file at a path) and load it; raises ``StoreError``."""
        if isinstance(backend, str | os.PathLike):
            backend = backend_for(backend)
        snapshot = await backend.open(keep)
        return cls(backend, snapshot, keep=keep, write_ahead_start=write_ahead_start)

    @property
    def description(self) -> str:
        return self.backend.description

    def sequence(self, sink: Sink) -> SequencedOutbox:
        """The outbox an executor with this store writes into: events reach ``sink`` in the
        order they happened, each logged one after its commit (:mod:`._eventlog`)."""
        self.events.sink = sink
        return SequencedOutbox(self.events, sink)

    def attach(self, executor: Executor) -> None:
        """Make ``executor`` durable through this store: submits, transitions, templates.

        Without :meth:`sequence`, the executor's own outbox is the sink: lifecycle events are
        still logged, but plain ones are not ordered behind them (embedded use and tests).
        """
        if self.events.sink is None:
            self.events.sink = cast(Sink, executor.outbox)
        self._next_number = lambda: executor.table.next_number
        executor.use_durable_state(self)

    def redeliver(self) -> None:
        """Write the events the last run committed but had not written (right after ``ready``)."""
        self.events.redeliver(self.snapshot.undelivered)

    # -- writes: synchronous, never blocking; each returns the batch it joined -------------------

    def add_job(self, job_id: str, name: str | None, request: bytes, accepted: Event) -> int:
        """A new job, queued, and its ``accepted``: both written in one commit, or neither."""
        if self.failure:
            raise StoreFailed(self.failure)
        self._batch.inserts.append((job_id, name, request))
        self.events.log(accepted)
        return self._touch()

    def add_completed(
        self, job_id: str, name: str | None, request: str, output: str, lines: bytes
    ) -> int:
        """A new job that succeeded at once (a bare value, ``output`` its JSON): its final row
        and its three events (``lines``: :meth:`EventLog.log_completed`'s form) written in one
        commit, or neither. The caller checked :attr:`failure`."""
        self._fin += 1
        batch = self._batch
        batch.done += (job_id, 0 if name is None else name, request, output, self._fin)
        batch.prune_to = self._fin - self._keep
        self.events.log_completed(lines)
        if not batch.dirty:
            batch.dirty = True
            self._wake.unpark_all()
        return batch.gen

    def add_completed_run(
        self,
        job_ids: list[str],
        names: list[str | int],
        requests: list[str],
        outputs: list[str],
        lines: bytes,
    ) -> int:
        """:meth:`add_completed` for a run of jobs at once (``store/_values.py``): ``names``
        with 0 for none, as :attr:`Batch.done` holds them; ``lines``: their events, a ``%``
        format taking their ``seq`` (:meth:`EventLog.log_completed_run`). The caller checked
        :attr:`failure`."""
        count = len(job_ids)
        fin = self._fin
        self._fin = fin + count
        rows: list[Any] = [0] * (DONE_FIELDS * count)  # filled a column at a time, in C
        rows[0::DONE_FIELDS] = job_ids
        rows[1::DONE_FIELDS] = names
        rows[2::DONE_FIELDS] = requests
        rows[3::DONE_FIELDS] = outputs
        rows[4::DONE_FIELDS] = range(fin + 1, fin + count + 1)
        batch = self._batch
        batch.done += rows
        batch.prune_to = self._fin - self._keep
        self.events.log_completed_run(lines, 3 * count)
        if not batch.dirty:
            batch.dirty = True
            self._wake.unpark_all()
        return batch.gen

    @property
    def open_gen(self) -> int:
        """The batch that writes join now."""
        return self._batch.gen

    def put_template(self, name: str, job: Any) -> int:
        self._batch.templates.append((name, orjson.dumps(job)))
        return self._touch()

    def put_object(self, kind: str, key: str, body: Any) -> int:
        """Store (or, with ``None``, delete) a named object of another service."""
        data = None if body is None else orjson.dumps(body)
        self._batch.objects.append((kind, key, data))
        return self._touch()

    def log_event(self, event: Event) -> None:
        """An event the driver must get, written once what was recorded so far is committed."""
        self._log(event)

    def requeued(self, job: Job) -> None:
        """A job found running after a crash goes back to the queue to run again."""
        self._set_state(job, "queued")

    # -- what the executor asks (engine/_durable.py's DurableState) ------------------------------

    async def submit(
        self,
        executor: Executor,
        job: Any,
        *,
        template: str | None,
        params: Mapping[str, Any] | None,
        name: str | None,
        request_id: RequestId,
        extra: dict[str, Any],
    ) -> Job:
        with loading("durable submits"):
            from ._admit import submit_durably

        return await submit_durably(
            executor, self, job, template=template, params=params, name=name,
            request_id=request_id, extra=extra,
        )  # fmt: skip

    def record_template(self, name: str, job: Any) -> None:
        self.put_template(name, job)

    def on_started(self, job: Job, event: Event) -> None:
        self._set_state(job, "running")
        self._log(event)

    def on_cancelling(self, job: Job, event: Event) -> None:
        """A cancel request: recorded (a running job as ``cancelling``, which recovery finishes
        ``cancelled``; a queued one finishes at once) before its ``cancelling`` is written."""
        if job.state is JobState.RUNNING:
            self._set_state(job, "cancelling")
        self._log(event)

    def on_finished(self, job: Job, event: Event) -> None:
        """Record the outcome; its ``finished`` event is written once the outcome is durable."""
        self._fin += 1
        result = job.output if job.state is JobState.SUCCEEDED else job.error
        self._batch.updates[job.id] = (_STATE_NAMES[job.state], job.elapsed, result, self._fin)
        self._batch.prune_to = self._fin - self._keep
        self._log(event)

    # -- durability -------------------------------------------------------------------------------

    def is_durable(self, gen: int) -> bool:
        return gen <= self._durable

    def is_decided(self, gen: int) -> bool:
        """Whether the submits staged in batch ``gen`` are committed or withdrawn."""
        return gen <= self._durable or gen <= self._withdrawn_gen

    def admitted(self, job_id: str, gen: int) -> bool:
        """Whether a submit staged in batch ``gen`` was committed (else it is refused)."""
        if job_id in self._refused:
            self._refused.discard(job_id)
            return False
        return gen <= self._durable

    def all_admitted(self, gen: int) -> bool:
        """Whether every submit staged in batch ``gen`` was committed (none was withdrawn)."""
        return gen <= self._durable and not self._refused

    @property
    def failure(self) -> str:
        """Why nothing can be written now ("" while writes work)."""
        return self._stopped or self._failing or ""

    async def wait_durable(self, gen: int) -> None:
        """Return once batch ``gen`` is committed; raise :class:`StoreFailed` if it never will.

        A failing commit is retried: this waits through it (the state may come back).
        """
        while gen > self._durable:
            if self._stopped is not None:
                raise StoreFailed(self._stopped)
            await self._committed.park()

    async def wait_admitted(self, gen: int) -> None:
        """Return once the submits staged in batch ``gen`` are committed or withdrawn."""
        while not self.is_decided(gen):
            if self._stopped is not None:
                raise StoreFailed(self._stopped)
            await self._committed.park()

    async def sync(self) -> None:
        """Wait until every write made so far is committed."""
        # A clean current batch may still follow one being written (taken, not yet durable):
        # wait for that one (gen - 1), not just for what is already durable.
        await self.wait_durable(self._batch.gen if self._batch.dirty else self._batch.gen - 1)

    async def wait_recorded(self) -> None:
        """Like :meth:`sync`, but a broken store does not stop jobs (it was logged already)."""
        with contextlib.suppress(StoreFailed):
            await self.sync()

    # -- the writer task ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until closed; then close the backend. Sets :attr:`closed`."""
        task_status.started()
        try:
            while self._stopped is None:
                if self._batch.dirty or self._retry is not None:
                    await self._write(*self._take())
                elif self._closing:
                    self.flushed.set()
                    await self._commit_final_cursor()
                    break
                elif self.events.lagging:
                    # Written events' cursor rides on the next commit; when none comes soon,
                    # it is committed alone, so that a crash repeats as little as possible.
                    with trio.move_on_after(CURSOR_DELAY):
                        await self._wake.park()
                    if not self._closing:  # else committed once, when all is written (below)
                        self._note_delivery()
                else:
                    await self._wake.park()
        finally:
            log.debug("%s: %d commits", self.description, self.commits)
            self._stop()
            self.flushed.set()
            with trio.CancelScope(shield=True):
                await self.backend.aclose()
            self.closed.set()

    async def flush(self) -> None:
        """Begin closing: return once what is pending is committed (or, on a disk that keeps
        failing, given up after :data:`CLOSE_ATTEMPTS`) and the events it logged are handed to
        the sink. Every outcome reported is durable then; what the writer does next is
        housekeeping: it records the events' delivery once the sink has written them (so a
        restart repeats none) and closes the backend (SQLite checkpoints its log into the file
        then), which :meth:`aclose` waits for. ``serve`` writes ``bye`` in between (NOTES.md,
        "--state throughput", Session 9)."""
        self._closing = True
        self._wake.unpark_all()
        await self.flushed.wait()

    async def aclose(self) -> None:
        """Commit what is pending, write the events it logged, record their delivery, and
        close the backend."""
        await self.flush()
        await self.closed.wait()

    def _take(self) -> tuple[Batch, Handover]:
        batch, handover = self._batch, self.events.take()
        if batch.inserts or batch.done:
            batch.next_id = self._next_number()
        self._batch = Batch(gen=batch.gen + 1)
        if self._retry is not None:
            (old, old_handover), self._retry = self._retry, None
            batch, handover = _merged(old, batch), old_handover + handover
        delivered = self.events.delivered()
        if delivered > self.events.cursor:
            batch.delivered = delivered
        return batch, handover

    async def _write(self, batch: Batch, handover: Handover) -> None:
        batch.events = self.events.stamp(handover)
        try:
            await self.backend.commit(batch)
        except Exception as exc:  # disk full, I/O error, or a bug: keep it, say why, retry
            self._failed(batch, handover, exc)
            await self._pause_before_retry()
            return
        if self._failing is not None:
            log.warning("%s is written again", self.description)
            self._failing, self._attempts = None, 0
        self._durable = batch.gen
        self.commits += 1
        if batch.delivered:
            self.events.cursor = batch.delivered
        self.events.committed(handover, batch.events)  # before waking: see NOTES.md
        self._committed.unpark_all()
        if self.on_commit is not None:
            self.on_commit()

    def _failed(self, batch: Batch, handover: Handover, exc: Exception) -> None:
        """Keep a failed batch to retry, without its submits: they are refused, so the driver
        is not kept waiting on a disk that may not come back."""
        if self._failing is None:
            what = "the %s cannot be written (%s): retrying; submits are refused"
            log.error(what, self.description, exc)
        self._failing = f"the {self.description} cannot be written: {exc}"
        self._attempts += 1
        withdrawn = {job_id for job_id, _, _ in batch.inserts}
        withdrawn.update(batch.done[::DONE_FIELDS])  # and every job completed at once
        self._refused |= withdrawn
        self._withdrawn_gen = batch.gen
        batch.inserts, batch.done, batch.events = [], [], []
        self._retry = (batch, self.events.withdraw(handover, withdrawn))
        self._committed.unpark_all()
        if self.on_commit is not None:
            self.on_commit()

    async def _pause_before_retry(self) -> None:
        if self._closing and self._attempts >= CLOSE_ATTEMPTS:
            self._give_up()
            return
        await trio.sleep(min(RETRY_FIRST * 2 ** (self._attempts - 1), RETRY_MAX))

    def _give_up(self) -> None:
        """Shutting down and still failing: what was not committed is not written either. The
        jobs it concerned are unfinished in the state, so the next start recovers them."""
        assert self._retry is not None
        unwritten = sum(1 for ev in self._retry[1] if not isinstance(ev, Plain))
        self._stopped = f"{self._failing}; {unwritten} events were not written"
        log.error("%s: stopping; the next start recovers their jobs", self._stopped)
        handover, self._retry = self._retry[1], None
        self.events.abandoned(handover)

    def _note_delivery(self) -> None:
        if self.events.delivered() > self.events.cursor:
            self._touch()  # a batch carrying only the cursor

    async def _commit_final_cursor(self) -> None:
        """At close: once stdout has the last events, record that (a restart repeats none)."""
        with trio.move_on_after(CLOSE_FLUSH):
            await self.events.wait_all_written()
        delivered = self.events.delivered()
        if delivered > self.events.cursor:
            batch = Batch(gen=self._batch.gen, dirty=True, delivered=delivered)
            with contextlib.suppress(Exception):  # only a repeat after restart is at stake
                await self.backend.commit(batch)

    def _stop(self) -> None:
        """The writer ends (closed, or cancelled by a hard stop): release every waiter."""
        if self._stopped is None:
            self._stopped = "stepline is shutting down"
        self._committed.unpark_all()

    def _log(self, event: Event) -> None:
        if self._stopped is not None:
            log.debug("not recorded, not written (the store has stopped): %r", event)
            return
        self.events.log(event)
        self._touch()

    def _set_state(self, job: Job, state: str) -> None:
        self._batch.updates[job.id] = (state, None, None, None)
        self._touch()

    def _touch(self) -> int:
        batch = self._batch
        if not batch.dirty:
            batch.dirty = True
            self._wake.unpark_all()
        return batch.gen


def _merged(old: Batch, new: Batch) -> Batch:
    """A failed batch with the next one on top, committed as the next one (all or nothing)."""
    old.gen, old.dirty = new.gen, True
    old.inserts += new.inserts
    old.done += new.done
    old.updates.update(new.updates)
    old.templates += new.templates
    old.objects += new.objects
    old.next_id = max(old.next_id, new.next_id)
    if new.prune_to is not None:
        old.prune_to = max(old.prune_to or 0, new.prune_to)
    return old
