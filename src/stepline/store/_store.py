"""The store: durable state for ``stepline serve --state``, written in batches to a backend.

What is recorded, and when:

* a job, *before* its ``accepted`` is written: its id, its name, and the request that rebuilds it
  (:func:`~stepline.store._admit.encode_request`). State ``queued``.
* each state change, as the job table makes it (the store is the table's observer): ``running``
  when a worker takes the job; the final state with its output or error when it finishes. A
  job's ``finished`` *event* is held back until that record is committed, so a ``finished`` a
  driver has seen is never contradicted by a rerun after a crash. With ``--on-restart fail`` the
  worker waits for the ``running`` record before the steps begin (``write_ahead_start``), so a
  job that had begun is failed as ``interrupted`` after a crash, never run a second time.
* templates, on ``define``; the job id counter, so no id is ever handed out twice.

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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import trio

from .._errors import StoreFailed
from ..engine._jobs import Job, JobState
from ..wire._events import EmitFn, Event, RequestId
from ._backend import Backend
from ._model import Batch, Snapshot

if TYPE_CHECKING:
    from ..engine._executor import Executor

__all__ = ["Store", "backend_for"]

log = logging.getLogger("stepline")


def backend_for(location: str | os.PathLike[str]) -> Backend:
    """The backend a ``--state`` value names: today a path, an SQLite file."""
    from ._sqlite import SqliteBackend  # start-up time: sqlite3 only when used

    return SqliteBackend(location)


class Store:
    """The durable state of one executor: a batching writer over a backend, and the snapshot
    loaded at start.

    Create with :meth:`open`, run :meth:`run` in a nursery, :meth:`attach` it to the executor,
    and :meth:`aclose` it after the last job.
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
        self._held: list[Event] = []  # `finished` events of the open batch
        self._durable = 0  # every batch up to this one is committed
        self._fin = snapshot.last_fin  # finish numbers continue above the loaded rows
        self._emit: EmitFn = _unbound
        self._next_number: Callable[[], int] = lambda: snapshot.next_id
        self._wake = trio.lowlevel.ParkingLot()  # the writer, waiting for a dirty batch
        self._committed = trio.lowlevel.ParkingLot()  # submits waiting for their commit
        self._closing = False
        self.commits = 0  # transactions committed: many writes each (see the module docstring)
        self._failure: str | None = None  # set once: no more writes are attempted
        self.closed = trio.Event()

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

    def attach(self, executor: Executor) -> None:
        """Make ``executor`` durable through this store: submits, transitions, templates."""
        self._emit = executor.outbox.emit
        self._next_number = lambda: executor.table.next_number
        executor.use_durable_state(self)

    # -- writes: synchronous, never blocking; each returns the batch it joined -------------------

    def add_job(self, job_id: str, name: str | None, request: bytes) -> int:
        """A new job, queued. Its submit awaits :meth:`wait_durable` before ``accepted``."""
        if self._failure is not None:
            raise StoreFailed(self._failure)
        self._batch.inserts.append((job_id, name, request))
        return self._touch()

    def put_template(self, name: str, job: Any) -> int:
        self._batch.templates.append((name, orjson.dumps(job)))
        return self._touch()

    def put_object(self, kind: str, key: str, body: Any) -> int:
        """Store (or, with ``None``, delete) a named object of another service."""
        data = None if body is None else orjson.dumps(body)
        self._batch.objects.append((kind, key, data))
        return self._touch()

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
        from ._admit import submit_durably

        return await submit_durably(
            executor, self, job, template=template, params=params, name=name,
            request_id=request_id, extra=extra,
        )  # fmt: skip

    def record_template(self, name: str, job: Any) -> None:
        self.put_template(name, job)

    def on_started(self, job: Job) -> None:
        self._set_state(job, "running")

    def on_finished(self, job: Job, event: Event) -> None:
        """Record the outcome; its ``finished`` event is written once the outcome is durable."""
        if self._failure is not None or self.closed.is_set():
            self._emit(event)  # nothing is recorded any more: at least never lose the event
            return
        self._fin += 1
        result = job.output if job.state is JobState.SUCCEEDED else job.error
        self._batch.updates[job.id] = (job.state.value, job.elapsed, result, self._fin)
        self._batch.prune_to = self._fin - self._keep
        self._held.append(event)
        self._touch()

    # -- durability -------------------------------------------------------------------------------

    def is_durable(self, gen: int) -> bool:
        return gen <= self._durable

    @property
    def failure(self) -> str:
        """Why writes stopped ("" while they work)."""
        return self._failure or ""

    async def wait_durable(self, gen: int) -> None:
        """Return once batch ``gen`` is committed; raise :class:`StoreFailed` if it never will."""
        while gen > self._durable:
            if self._failure is not None:
                raise StoreFailed(self._failure)
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
            while self._batch.dirty or not self._closing:
                if not self._batch.dirty:
                    await self._wake.park()
                    continue
                await self._write(*self._take())
        finally:
            log.debug("%s: %d commits", self.description, self.commits)
            self._stop()
            with trio.CancelScope(shield=True):
                await self.backend.aclose()
            self.closed.set()

    async def aclose(self) -> None:
        """Commit what is pending, release the held events, and close the backend."""
        self._closing = True
        self._wake.unpark_all()
        await self.closed.wait()

    def _take(self) -> tuple[Batch, list[Event]]:
        batch, held = self._batch, self._held
        if batch.inserts:
            batch.next_id = self._next_number()
        self._batch, self._held = Batch(gen=batch.gen + 1), []
        return batch, held

    async def _write(self, batch: Batch, held: list[Event]) -> None:
        if self._failure is None:
            try:
                await self.backend.commit(batch)
            except Exception as exc:  # disk full, I/O error, or a bug: stop writing, say why
                self._failure = f"the {self.description} cannot be written: {exc}"
                log.exception("%s; jobs now run without durable state", self._failure)
            else:
                self._durable = batch.gen
                self.commits += 1
        for event in held:  # after a failure too: a finished event is never lost
            self._emit(event)
        self._committed.unpark_all()

    def _stop(self) -> None:
        """The writer ends (closed, or cancelled by a hard stop): release every waiter."""
        if self._failure is None:
            self._failure = "stepline is shutting down"
        self._committed.unpark_all()

    def _set_state(self, job: Job, state: str) -> None:
        if self._failure is None:
            self._batch.updates[job.id] = (state, None, None, None)
            self._touch()

    def _touch(self) -> int:
        batch = self._batch
        if not batch.dirty:
            batch.dirty = True
            self._wake.unpark_all()
        return batch.gen


def _unbound(event: Event) -> None:
    raise RuntimeError("Store.attach was not called: finished events have nowhere to go")
