"""The job table: every job's state, and the only code that changes it.

This is the STM-like core of stepline. Each transition (:meth:`JobTable.accept`, ``start``,
``finish``, ``request_cancel``) is a plain synchronous method: it reads the state, checks the move
against the lifecycle, writes the new state and emits the event announcing it, all without an
``await``. Trio only switches tasks at an ``await``, so a transition is atomic with respect to
every other task, the way an STM transaction is, without locks. Any move the lifecycle forbids
raises :class:`~stepline._errors.IllegalTransition`, which is always a bug in stepline.

The lifecycle itself (states and allowed moves) is :mod:`stepline.engine._states`, the record
each transition writes :mod:`stepline.engine._job_record`, and the ``status`` query over the
records :mod:`stepline.engine._status_filter` (this module exports their names too, as the
table's vocabulary). The table also owns retention: finished records are kept for ``status`` up
to ``keep`` most recent ones, their outputs within a byte budget
(:mod:`stepline.engine._retention`).

The three events every job gets (``accepted``, ``started``, ``finished``) are written here as
dict literals, not through :func:`~stepline.wire._events.event`: its keyword arguments cost twice
the instructions, and these are the hot path of a trivial job. Their shape is the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson
import trio

from .._errors import AlreadyFinished, IllegalTransition, UnknownJob
from ..spec._model import JobSpec
from ..wire._events import EmitFn, EmitLinesFn, Event, RequestId, completed_lines, reply
from ._job_record import Job, JobScope
from ._retention import KEEP_BYTES, SMALL_OUTPUT, Retention, output_size
from ._states import ALLOWED_MOVES, FINAL_STATES, JobState
from ._status_filter import StatusFilter

__all__ = [
    "FINAL_STATES",
    "KEEP_BYTES",
    "SMALL_OUTPUT",
    "FinishHook",
    "Job",
    "JobScope",
    "JobState",
    "JobTable",
    "StatusFilter",
    "TableObserver",
    "output_size",
]


_SUCCEEDED = JobState.SUCCEEDED
# JobTable.complete_value makes these two moves without asking ALLOWED_MOVES each time.
if (
    JobState.RUNNING not in ALLOWED_MOVES[JobState.QUEUED]
    or _SUCCEEDED not in ALLOWED_MOVES[JobState.RUNNING]
):
    raise ImportError("the lifecycle no longer allows queued -> running -> succeeded")


FinishHook = Callable[["Job", Event], None]
"""Called with a job and its ``finished`` event right after that event (``Executor.on_finish``)."""


class TableObserver(Protocol):
    """Sees every start, cancel and finish as it happens (the ``--state`` store).

    Called synchronously inside the transition, so it must not block or ``await``: it records
    the change and returns. Each call takes over writing the transition's event, so the store
    can write it only once the change it reports is durable (:mod:`stepline.store._eventlog`).
    """

    def on_started(self, job: Job, event: Event) -> None: ...

    def on_cancelling(self, job: Job, event: Event) -> None: ...

    def on_finished(self, job: Job, event: Event) -> None: ...


class JobTable:
    """All jobs stepline knows about, and the transitions between their states."""

    def __init__(
        self,
        emit: EmitFn,
        *,
        keep: int = 1000,
        keep_bytes: int = KEEP_BYTES,
        emit_lines: EmitLinesFn | None = None,
    ) -> None:
        self._emit = emit
        # Where events already encoded as JSON lines may go (an outbox that writes lines);
        # None: every event is emitted as a dict (complete_value is then unavailable).
        self._emit_lines = emit_lines
        self._jobs: dict[str, Job] = {}
        self._queued: dict[str, Job] = {}
        self._running: dict[str, Job] = {}
        self._kept = Retention(keep, keep_bytes)  # which finished records stay in _jobs
        self._finished_counts = dict.fromkeys(FINAL_STATES, 0)
        self._next_id = 1
        self.observer: TableObserver | None = None  # None (no --state): the fast path
        # Called right after each `finished` is emitted, with the job and that event (the
        # on_finish callbacks hook in here). Synchronous, and must not raise: part of finish.
        self.finish_hooks: list[FinishHook] = []
        # The same, called only for jobs with `on_finish` callbacks (Executor.on_finish).
        self.callback_hooks: list[FinishHook] = []

    # -- transitions ------------------------------------------------------------------------

    def accept(
        self,
        spec: JobSpec,
        *,
        name: str | None,
        request_id: RequestId = None,
        job_id: str | None = None,
        announce: bool = True,
        **extra: Any,
    ) -> Job:
        """Record a new job as queued and announce it with ``accepted``.

        ``job_id`` is an id taken earlier with :meth:`reserve_id` (a durable submit writes its
        record under that id before accepting); by default the next id is taken now. With
        ``announce=False`` no event is written: a durable submit committed its ``accepted``
        (:meth:`accepted_event`) with its record.
        """
        job = Job(
            id=job_id if job_id is not None else self.reserve_id(),
            spec=spec,
            name=name if name is not None else spec.name,
            extra=extra,
            request_id=request_id,
        )
        self._jobs[job.id] = job
        self._queued[job.id] = job
        job.created = time.time()
        if announce:
            self._emit(self.accepted_event(job.id, request_id, extra))
        return job

    @staticmethod
    def accepted_event(job_id: str, request_id: RequestId, extra: dict[str, Any]) -> Event:
        """The ``accepted`` event of a job."""
        accepted = {"event": "accepted", "ts": time.time(), "job": job_id, **extra}
        if request_id is not None:
            accepted["id"] = request_id
        return accepted

    def completes_value(self, workers: int) -> bool:
        """Whether :meth:`complete_value` may be used now, with ``workers`` workers up: no job
        is queued and one of them is free (a worker would start a job at once), events go out
        as lines, and nothing else (a ``--state`` observer, a hook on every finish) needs each
        event as a dict (a bare value has no callbacks: ``callback_hooks`` never see it).
        One method reading its own fields: it is asked before every such job."""
        return (
            not self._queued
            and len(self._running) < workers
            and self._emit_lines is not None
            and self.observer is None
            and not self.finish_hooks
        )

    def complete_value(self, value: Any, *, name: str | None, request_id: RequestId) -> Job:
        """A bare ``value`` job run at once: accepted, started and succeeded in one step.

        The same record, counts, retention and events as :meth:`accept`, :meth:`start` and
        :meth:`finish` one after the other with nothing in between (what
        ``Executor.submit_nowait`` does for any job run at once), in a fraction of the work:
        the moves are the lifecycle's (checked once, at import), the job is never listed as
        queued or running (no other task runs before it has succeeded), one clock reading
        serves all three events (its ``elapsed`` is 0), and the events are encoded together
        from pieces (:func:`~stepline.wire._events.completed_lines`). Only while
        :meth:`completes_value`; ``value`` was checked by ``value_job``.
        """
        assert self._emit_lines is not None
        now = time.time()
        job = self.completed_value(
            self.reserve_id(), value, name=name, request_id=request_id, now=now
        )
        self._jobs[job.id] = job
        self._finished_counts[_SUCCEEDED] += 1
        try:
            output = orjson.dumps(value)
        except orjson.JSONEncodeError:  # not from JSON input: each event repaired on its own
            self._emit(self.accepted_event(job.id, request_id, job.extra))
            self._emit(job.tag({"event": "started", "ts": now, "job": job.id}))
            self._emit(self._finished_event(job))
            self._retain(job)
        else:
            self._emit_lines(completed_lines(job.id, now, output, request_id), 3)
            self._retain(job, len(output))
        return job

    @staticmethod
    def completed_value(
        job_id: str, value: Any, *, name: str | None, request_id: RequestId, now: float
    ) -> Job:
        """The record of a bare ``value`` job that succeeded at once at ``now`` (Unix time), as
        :meth:`complete_value` makes it, not yet in the table: ``--state`` makes it when the
        job's events join a commit and adds it with :meth:`add_completed` once they are durable.
        """
        job = Job(job_id, None, name, _SUCCEEDED, request_id=request_id, value=value)
        job.output = value
        job.started_at = job.finished_at = trio.current_time()
        job.created = job.started = job.ended = now
        return job

    def add_completed(self, job: Job, output_size: int) -> None:
        """Add a record made by :meth:`completed_value`, whose events were written elsewhere;
        ``output_size``: its output's encoded size. Counted and kept as :meth:`complete_value`
        counts and keeps it."""
        self._jobs[job.id] = job
        self._finished_counts[_SUCCEEDED] += 1
        self._retain(job, output_size)

    def add_completed_run(
        self, job_ids: list[str], jobs: list[Job], sizes: list[int], lines: bytes
    ) -> None:
        """Add records made as :meth:`completed_value` makes them, with ids from
        :meth:`reserve_ids`, and write ``lines``, their three events each in order: a run of
        value jobs completed at once together (``engine/_values.py``). Counted and kept as
        :meth:`complete_value` counts and keeps each; ``sizes``: their outputs' encoded sizes.
        Only while :meth:`completes_value`."""
        assert self._emit_lines is not None
        self._emit_lines(lines, 3 * len(jobs))
        self.add_completed_records(job_ids, jobs, sizes)

    def add_completed_records(self, job_ids: list[str], jobs: list[Job], sizes: list[int]) -> None:
        """Add records made as :meth:`completed_value` makes them, with ids ``job_ids``, of jobs
        that succeeded in this order and whose events were written elsewhere (``--state`` writes
        them after their commit); ``sizes``: their outputs' encoded sizes. Counted and kept as
        :meth:`add_completed` counts and keeps each."""
        self._jobs.update(zip(job_ids, jobs, strict=True))
        self._finished_counts[_SUCCEEDED] += len(jobs)
        for dropped in self._kept.add_run(jobs, sizes):
            del self._jobs[dropped.id]

    def start(self, job: Job, scope: JobScope | None) -> None:
        """A worker took the job: queued → running in ``scope``; its deadline starts now.

        ``scope`` None: the job is run at once, finished before any other task runs, so nothing
        can cancel it and it has no deadline (``Executor.submit_nowait``)."""
        self._move(job, JobState.RUNNING)
        del self._queued[job.id]
        self._running[job.id] = job
        job.scope = scope
        job.started_at = trio.current_time()
        if job.spec.timeout is not None and isinstance(scope, trio.CancelScope):
            scope.deadline = job.started_at + job.spec.timeout  # (a lane job has no timeout)
        job.started = now = time.time()
        started = job.tag({"event": "started", "ts": now, "job": job.id})
        if self.observer is None:
            self._emit(started)
        else:
            self.observer.on_started(job, started)  # written once the start is durable

    def finish(
        self, job: Job, state: JobState, *, output: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        """Running (or queued, when cancelled) → a final state; emits the one ``finished``."""
        was_running = job.state is JobState.RUNNING
        self._move(job, state)
        (self._running if was_running else self._queued).pop(job.id)
        job.finished_at = trio.current_time() if was_running else None
        job.output, job.error = output, error
        self._finished_counts[state] += 1
        finished = self._finished_event(job)
        if self.observer is None:
            self._emit(finished)
        else:
            self.observer.on_finished(job, finished)  # emits it once the outcome is durable
        self._retain(job)
        for hook in self.finish_hooks:
            hook(job, finished)
        if self.callback_hooks and job.spec.on_finish:
            for hook in self.callback_hooks:
                hook(job, finished)

    def request_cancel(
        self,
        job_id: str,
        request_id: RequestId = None,
        *,
        grace: float | None = None,
        force: bool = False,
    ) -> Job:
        """Answer ``cancelling``; a queued job finishes now, a running one is interrupted, its
        processes given ``grace`` seconds after SIGTERM (None: their steps' own ``grace``), or
        with ``force`` SIGKILLed at once — even when an earlier cancel is already stopping them.
        """
        job = self.get(job_id)
        if job.state in FINAL_STATES:
            raise AlreadyFinished(f"job {job_id} already finished ({job.state.value})")
        cancelling = reply("cancelling", request_id, job=job.id)
        if self.observer is None:
            self._emit(cancelling)
        else:
            self.observer.on_cancelling(job, cancelling)  # written once the cancel is durable
        if force:
            job.stop_orders.force()
        elif grace is not None and job.cancel_reason is None:  # a stop under way keeps its grace
            job.stop_orders.grace = grace
        self.cancel(job, "cancelled by request")
        return job

    def cancel(self, job: Job, reason: str) -> None:
        """Cancel a queued or running job; a no-op for a finished one or a repeated cancel."""
        if job.state is JobState.QUEUED:
            error = {"type": "cancelled", "message": reason, "step": ""}
            self.finish(job, JobState.CANCELLED, error=error)
        elif job.state is JobState.RUNNING and job.cancel_reason is None:
            job.cancel_reason = reason
            assert job.scope is not None  # a running job always has its scope
            job.scope.cancel()

    def reserve_id(self) -> str:
        """Take the next job id; ids are never reused (``--state`` persists the counter)."""
        job_id = f"j{self._next_id}"
        self._next_id += 1
        return job_id

    def reserve_ids(self, count: int) -> int:
        """Take the next ``count`` job ids at once; the number in the first (``j<n>``)."""
        first = self._next_id
        self._next_id += count
        return first

    @property
    def next_number(self) -> int:
        """The number in the next job id (``j<n>``)."""
        return self._next_id

    def continue_ids(self, next_number: int) -> None:
        """Ids continue from ``next_number`` at least (``--state``: where the last run stopped)."""
        self._next_id = max(self._next_id, next_number)

    def restore(self, job: Job) -> None:
        """Put back a job recovered from ``--state``: queued to run again, running (only to be
        finished as interrupted at once), or finished (kept for ``status``).

        No event: recovery announces the unfinished jobs itself, and finished ones were
        announced before the restart.
        """
        self._jobs[job.id] = job
        if job.state is JobState.QUEUED:
            self._queued[job.id] = job
        elif job.state is JobState.RUNNING:
            self._running[job.id] = job
        else:
            self._retain(job)

    # -- queries ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJob(f"unknown job {job_id!r}") from None

    def queued(self) -> Iterator[Job]:
        """Queued jobs, oldest first (a snapshot: safe to cancel while iterating)."""
        return iter(list(self._queued.values()))

    def running(self) -> Iterator[Job]:
        """Running jobs (a snapshot: safe to cancel while iterating)."""
        return iter(list(self._running.values()))

    def records(
        self, job_id: str | None = None, select: StatusFilter | None = None
    ) -> list[dict[str, Any]]:
        """``status`` records: one job's, or every known job's (in acceptance order), or those
        ``select`` picks (with a ``limit``: the most recent first)."""
        jobs = [self.get(job_id)] if job_id is not None else list(self._jobs.values())
        if select is not None:
            jobs = select.apply(jobs)
        return [job.record() for job in jobs]

    def counts(self) -> dict[str, Any]:
        """Counts for ``stats``: queued, running, and finished by final state (all time)."""
        finished = {state.value: count for state, count in self._finished_counts.items()}
        return {"queued": len(self._queued), "running": len(self._running), "finished": finished}

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    @property
    def running_count(self) -> int:
        return len(self._running)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _move(job: Job, new: JobState) -> None:
        if new not in ALLOWED_MOVES.get(job.state, ()):
            raise IllegalTransition(f"job {job.id}: {job.state.value} -> {new.value}")
        job.state = new

    @staticmethod
    def _finished_event(job: Job) -> dict[str, Any]:
        job.ended = now = time.time()
        ev = {"event": "finished", "ts": now, "job": job.id, "state": job.state.value}
        ev["elapsed"] = job.elapsed
        if job.state is JobState.SUCCEEDED:
            ev["output"] = job.output
        else:
            ev["error"] = job.error
            if job.partial is not None:
                ev["partial"] = job.partial
        if job.artifacts is not None:
            ev["artifacts"] = job.artifacts
        return job.tag(ev)

    def _retain(self, job: Job, output_size: int | None = None) -> None:
        dropped = self._kept.add(job, output_size)
        if dropped is not None:
            del self._jobs[dropped.id]
