"""The executor: a bounded queue, a nursery of workers, and the job table between them.

Flow of a job::

    submit ──validate──▶ JobTable.accept ──send_nowait──▶ [bounded memory channel]
                                                                │ receive
                         JobTable.finish ◀── run_step ◀── worker: JobTable.start

The memory channel *is* the queue and its buffer size is ``--queue``: there is no separate
counter to keep in step with it. A submit that finds it full either raises ``QueueFull``
(``on_full="reject"``) or parks until a worker takes a job (``"block"``). A job cancelled while
queued stays in the channel as a tombstone that workers skip; when the channel is full and holds
more items than there are queued jobs, :meth:`Executor._compact_queue` drops the tombstones so a
cancel frees its slot at once.

This class is the one engine: ``stepline serve`` drives it from stdin, and Python programs embed
it directly (:func:`stepline.open_executor`).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import trio
from attrs import field, frozen, validators

from ._errors import (
    BadCommand,
    InvalidJob,
    QueueFull,
    ShuttingDown,
    StepFailed,
    UnknownTemplate,
)
from ._events import RequestId, event
from ._interpret import StepContext, run_step, with_modifiers
from ._jobs import Job, JobState, JobTable
from ._outbox import Outbox
from ._process import ProcessGroups
from ._spec import JobSpec, Modifiers
from ._validate import validate_job, validate_template

__all__ = ["Config", "Executor", "ExecutorState"]

log = logging.getLogger("stepline")

_positive = validators.ge(1)


def _finite_non_negative(_: Any, attribute: Any, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


@frozen(kw_only=True)
class Config:
    """Executor settings; the CLI flags of ``stepline serve`` map onto these one to one."""

    workers: int = field(default=4, validator=_positive)
    queue_size: int = field(default=64, validator=_positive)
    on_full: Literal["block", "reject"] = "block"
    heartbeat: float = field(default=1.0, validator=_finite_non_negative)  # 0 disables
    keep: int = field(default=1000, validator=validators.ge(0))
    trace: bool = False


class ExecutorState(enum.Enum):
    RUNNING = "running"  # accepting jobs and running them
    DRAINING = "draining"  # no new jobs; queued and running jobs finish
    CANCELLING = "cancelling"  # no new jobs; every queued and running job is being cancelled
    CLOSED = "closed"  # every worker has exited; every accepted job has finished


class Executor:
    """Runs jobs. Create, then ``await nursery.start(executor.run)``; stop with ``shutdown``."""

    def __init__(self, config: Config, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.state = ExecutorState.RUNNING
        self.table = JobTable(outbox.emit, keep=config.keep)
        self.groups = ProcessGroups()
        self.templates: dict[str, dict[str, Any]] = {}
        self._send, self._receive = trio.open_memory_channel[Job](config.queue_size)
        self._room = trio.lowlevel.ParkingLot()  # submitters waiting for a queue slot
        self.closed = trio.Event()

    # -- the service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run workers until shut down and every accepted job has finished."""
        try:
            async with trio.open_nursery() as service:
                service.start_soon(self._heartbeat)
                async with trio.open_nursery() as workers:
                    for _ in range(self.config.workers):
                        workers.start_soon(self._worker, self._receive.clone())
                    task_status.started()
                service.cancel_scope.cancel()  # workers are done: stop the heartbeat
        finally:
            self.state = ExecutorState.CLOSED
            self.closed.set()

    async def _worker(self, jobs: trio.MemoryReceiveChannel[Job]) -> None:
        async with jobs:
            async for job in jobs:
                self._room.unpark_all()
                if job.state is JobState.QUEUED:  # else a tombstone: cancelled while queued
                    await self._run_job(job)

    async def _heartbeat(self) -> None:
        if self.config.heartbeat <= 0:
            return
        while True:
            await trio.sleep(self.config.heartbeat)
            if self.outbox.congested:
                continue  # heartbeats are advisory: skip them rather than pile them up
            for job in self.table.running():
                self.outbox.emit(event("progress", job=job.id, elapsed=job.elapsed, step=job.step))

    # -- running one job ---------------------------------------------------------------------

    async def _run_job(self, job: Job) -> None:
        self.table.start(job)
        try:
            state, output, error = await self._execute(job)
        except BaseException:
            # Cancelled from outside the job's own scope (an embedding program's nursery): the
            # job still gets its one `finished` before the cancellation goes on.
            self._finish_interrupted(job, JobState.CANCELLED, "executor was cancelled")
            raise
        if job.cancel_reason is not None:
            self._finish_interrupted(job, JobState.CANCELLED, job.cancel_reason)
        elif job.scope.cancel_called:
            self._finish_interrupted(job, JobState.TIMED_OUT, self._timeout_message(job))
        else:
            self.table.finish(job, state, output=output, error=error)

    async def _execute(self, job: Job) -> tuple[JobState, Any, dict[str, Any] | None]:
        ctx = StepContext(job, self.outbox, self.groups, trace=self.config.trace)
        spec = job.spec
        try:
            with job.scope:
                mods = Modifiers(retry=spec.retry)
                output = await with_modifiers(lambda: run_step(spec.body, ctx), mods, "")
                return JobState.SUCCEEDED, output, None
        except StepFailed as exc:
            return JobState.FAILED, None, exc.to_wire()
        except Exception as exc:
            log.exception("internal error in job %s", job.id)
            error = {"type": "internal", "message": _describe(exc), "step": job.step}
            return JobState.FAILED, None, error
        return JobState.CANCELLED, None, None  # the scope caught its cancellation: see _run_job

    def _finish_interrupted(self, job: Job, state: JobState, message: str) -> None:
        if job.state is JobState.RUNNING:
            kind = "cancelled" if state is JobState.CANCELLED else "timeout"
            error = {"type": kind, "message": message, "step": job.step}
            self.table.finish(job, state, error=error)

    @staticmethod
    def _timeout_message(job: Job) -> str:
        return f"job timed out after {job.spec.timeout:g}s"

    # -- commands ----------------------------------------------------------------------------

    async def submit(
        self,
        job: Any = None,
        *,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        request_id: RequestId = None,
        **extra: Any,
    ) -> Job:
        """Validate and queue a job (a spec, or a template with params); returns its record."""
        self._check_accepting()
        spec = self._validate(job, template, params)
        await self._wait_for_room()
        self._check_accepting()  # shutdown may have begun while we waited for room
        record = self.table.accept(spec, name=name, request_id=request_id, **extra)
        record.params = dict(params or {})
        self._send.send_nowait(record)
        return record

    def cancel(self, job_id: str, request_id: RequestId = None) -> Job:
        job = self.table.request_cancel(job_id, request_id)
        self._room.unpark_all()  # a cancelled queued job may free a slot
        return job

    def define(self, name: str, job: Any) -> None:
        if not isinstance(job, dict):
            raise InvalidJob("", "a template's job must be a JSON object")
        validate_template(job, self.templates, name=name)
        self.templates[name] = job

    def stats(self) -> dict[str, Any]:
        return {
            **self.table.counts(),
            "workers": self.config.workers,
            "queue_size": self.config.queue_size,
        }

    def shutdown(self, mode: Literal["drain", "cancel"] = "drain") -> None:
        """Stop taking jobs; ``cancel`` also cancels every queued and running job."""
        if self.state is ExecutorState.CLOSED:
            return
        if mode == "cancel":
            self.state = ExecutorState.CANCELLING
            for job in [*self.table.queued(), *self.table.running()]:
                self.table.cancel(job, "cancelled by shutdown")
        elif self.state is ExecutorState.RUNNING:
            self.state = ExecutorState.DRAINING
        self._send.close()
        self._room.unpark_all()

    def kill(self) -> None:
        """Stop at once: cancel everything and SIGKILL every child, whatever its grace."""
        self.shutdown("cancel")
        self.groups.kill_all()

    # -- internals ---------------------------------------------------------------------------

    def _check_accepting(self) -> None:
        if self.state is not ExecutorState.RUNNING:
            raise ShuttingDown(f"not accepting jobs: executor is {self.state.value}")

    def _validate(
        self, job: Any, template: str | None, params: Mapping[str, Any] | None
    ) -> JobSpec:
        if (job is None) == (template is None):
            raise BadCommand("give exactly one of 'job' and 'template'")
        if template is not None:
            if template not in self.templates:
                raise UnknownTemplate(f"unknown template {template!r}")
            job = self.templates[template]
        return validate_job(job, params=params, templates=self.templates)

    async def _wait_for_room(self) -> None:
        while self._queue_is_full():
            if self.config.on_full == "reject":
                raise QueueFull(f"the queue is full ({self.config.queue_size} jobs waiting)")
            await self._room.park()
            self._check_accepting()

    def _queue_is_full(self) -> bool:
        stats = self._send.statistics()
        if stats.current_buffer_used < stats.max_buffer_size:
            return False
        if stats.current_buffer_used > self.table.queued_count:
            self._compact_queue()  # the buffer holds tombstones of jobs cancelled while queued
            stats = self._send.statistics()
        return stats.current_buffer_used >= stats.max_buffer_size

    def _compact_queue(self) -> None:
        """Drop tombstones from the channel, keeping live jobs in order. Synchronous: atomic."""
        live: list[Job] = []
        while True:
            try:
                job = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            if job.state is JobState.QUEUED:
                live.append(job)
        for job in live:
            self._send.send_nowait(job)


def _describe(exc: BaseException) -> str:
    """``internal error: ZeroDivisionError: ...``, looking through nursery exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"internal error: {type(exc).__name__}: {exc}"
