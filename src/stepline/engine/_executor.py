"""The executor: a bounded queue, a nursery of workers, and the job table between them.

Flow of a job::

    submit ──validate──▶ JobTable.accept ──send_nowait──▶ [bounded memory channel]
                                                                │ receive
                         JobTable.finish ◀── run_step ◀── worker: JobTable.start

This module accepts jobs and queues them; the workers that take them off the queue, and the run
lane's dispatch from it, are :class:`~stepline.engine._dispatch.Dispatcher`'s
(``engine/_dispatch.py``), which the executor builds over the table, queue and slots they share.

A job that a worker would start at once (no job is waiting, a worker is free) and whose steps can
never await (:func:`~stepline.engine._interpret.completes_at_once`: a bare ``value``, say) skips
the queue: :meth:`Executor.submit_nowait` runs it where it was read, through the same transitions
(:func:`~stepline.engine._execution.execute_at_once`), so its ``started`` and ``finished`` follow
its ``accepted`` before the next command is read. Nothing is reordered that a worker would not
have run in the same order: the queue is empty, and only a synchronous submit does it. A bare
``{"value": v}`` goes further: it is checked without building its spec and completed in one
transition, its three events encoded together (``JobTable.complete_value``).

The queue is one bounded memory channel, owned by :class:`~stepline.engine._queue.JobQueue` (which
counts what it holds, since every put and take goes through it); its size is ``--queue``. A
submit that finds it full either raises ``QueueFull`` (``on_full="reject"``) or parks until a
worker takes a job (``"block"``). A job cancelled while queued stays in the channel as a
tombstone that workers skip; when the channel is full and holds more items than there are queued
jobs, :meth:`JobQueue.compact <stepline.engine._queue.JobQueue.compact>` drops the tombstones so a
cancel frees its slot at once.

This class is the one engine: ``stepline serve`` drives it from stdin, and Python programs embed
it directly (:func:`stepline.open_executor`).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import trio

from .._errors import BadCommand, InvalidJob, QueueFull, ShuttingDown, UnknownTemplate
from ..runners._base import Runner
from ..runners._deferred import DeferredRunner, local_runner
from ..spec._model import JobSpec
from ..spec._policy import check_run_policy
from ..spec._signature import check_arguments
from ..spec._validate import NOT_A_VALUE, validate_job, validate_template, value_job
from ..wire._events import RequestId, event
from ..wire._outbox import Outbox, StreamOutbox
from ._attach import Attachment, Attachments, ShutdownMode
from ._config import Config
from ._dispatch import Dispatcher
from ._durable import DurableState
from ._execution import execute_at_once, runs_at_once
from ._http_client import HttpClient
from ._interpret import Services
from ._jobs import FINAL_STATES, FinishHook, Job, JobState, JobTable
from ._queue import JobQueue
from ._run_lane import RunLane
from ._slots import Slots
from ._tasks import Cleanups
from ._values import ValueRun
from ._workspace import WorkspacePool

__all__ = ["Config", "Executor", "ExecutorState"]

_A = TypeVar("_A")


class ExecutorState(enum.Enum):
    """Whether the executor takes new jobs, and how it is ending."""

    RUNNING = "running"  # accepting jobs and running them
    DRAINING = "draining"  # no new jobs; queued and running jobs finish
    CANCELLING = "cancelling"  # no new jobs; every queued and running job is being cancelled
    CLOSED = "closed"  # every worker has exited; every accepted job has finished


class Executor:
    """Runs jobs. Create, then ``await nursery.start(executor.run)``; stop with ``shutdown``.

    The executor alone runs jobs. Callbacks, alerts and schedules are services attached to it
    from outside (:meth:`attach`, :meth:`on_finish`; see :mod:`stepline.engine._attach`):
    ``stepline serve`` and :func:`stepline.open_executor` attach them.
    """

    def __init__(self, config: Config, outbox: Outbox, *, runner: Runner | None = None) -> None:
        self.config = config
        self.outbox = outbox
        self.state = ExecutorState.RUNNING
        self.table = JobTable(
            outbox.emit,
            keep=config.keep,
            keep_bytes=config.keep_bytes,
            # An outbox that writes JSON lines takes a job's three events encoded together.
            emit_lines=outbox.emit_lines if isinstance(outbox, StreamOutbox) else None,
        )
        # starts `run` steps' processes (and run callbacks'): local process trees by default,
        # and those that ask for the sandbox in bubblewrap
        self.runner: Runner = runner if runner is not None else DeferredRunner(local_runner)
        self.cleanups = Cleanups()  # `always` tasks still running after a cancel (_tasks.py)
        self.workspaces = WorkspacePool(config.workers)  # empty directories for reuse
        self.templates: dict[str, dict[str, Any]] = {}
        self.queue = JobQueue(config.queue_size)
        self._room = trio.lowlevel.ParkingLot()  # submitters waiting for a queue slot
        self.closed = trio.Event()
        self._working = False  # the workers are taking jobs (between run's start and its end)
        # --state (engine/_durable.py): None keeps every path in memory, and fast.
        self.durable: DurableState | None = None
        self._reserved = 0  # queue slots held by durable submits not yet accepted
        self.http = HttpClient()  # `http` steps' pool, made on first use; attachments share it
        self._slots = Slots(self.table, config.workers)  # the --workers bound, lane jobs too
        self._attached = Attachments()
        self._services = _step_services(config, outbox, self.runner, self.http, self.cleanups)
        # the workers, and the run lane's dispatch from the queue (_dispatch.py)
        self._dispatcher = Dispatcher(
            self.table,
            self.queue,
            self._slots,
            self._room,
            self._services,
            self.workspaces,
            outbox,
            artifacts=config.artifacts,
        )
        self._dispatcher.lane = self._plain_run_lane(custom_runner=runner is not None)

    def _plain_run_lane(self, *, custom_runner: bool) -> RunLane | None:
        """The run lane for plain `run` jobs, without a task each (_run_lane.py): with the
        default runner only, and no --trace; STEPLINE_RUN_LANE=0 keeps them on the worker path
        (tests and benches compare the two)."""
        if custom_runner or self.config.trace or os.environ.get("STEPLINE_RUN_LANE") == "0":
            return None
        assert isinstance(self.runner, DeferredRunner)
        freed = self._dispatcher.lane_slot_freed
        return RunLane(self.table, self._services, self.workspaces, self.runner, freed)

    # -- the service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run workers until shut down and every accepted job has finished."""
        try:
            async with trio.open_nursery() as service:
                service.start_soon(self._heartbeat)
                self.workspaces.remove_stale_soon()  # of servers SIGKILLed before (a thread)
                lane = self._dispatcher.lane
                if lane is not None:
                    await service.start(lane.serve)
                await self._attached.start(service)
                async with trio.open_nursery() as workers:
                    self._dispatcher.start_workers(workers, self.config.workers)
                    self._working = True
                    task_status.started()
                if lane is not None:
                    await lane.drained()  # lane jobs have no worker to wait for
                await self._attached.drain()  # every job has finished: callbacks may still run
                service.cancel_scope.cancel()  # workers are done: stop the heartbeat
        finally:
            self._working = False
            self._attached.ended()
            with trio.CancelScope(shield=True):
                await self.http.aclose()
            self.workspaces.clear()
            self.state = ExecutorState.CLOSED
            self.closed.set()

    def attach(self, service: Attachment) -> None:
        """Attach a service: it runs beside the workers, hears of the shutdown, and drains once
        every job has finished (:class:`~stepline.engine._attach.Attachment`)."""
        self._attached.add(service)

    def attached(self, kind: type[_A]) -> _A | None:
        """The attached service of class ``kind`` (the first one), or None."""
        return self._attached.find(kind)

    def on_finish(self, hook: FinishHook, *, callbacks_only: bool = False) -> None:
        """Call ``hook(job, finished)`` right after each job's ``finished`` event.

        Synchronous, and it must not raise: it runs inside the job's transition. A job with
        ``on_finish`` callbacks is refused while no hook is registered, since nothing would run
        them. ``callbacks_only``: the hook is called only for jobs that have ``on_finish``
        callbacks (it has nothing to do for others), so other jobs' events need not be built
        as dicts for it (``JobTable.complete_value``).
        """
        hooks = self.table.callback_hooks if callbacks_only else self.table.finish_hooks
        hooks.append(hook)

    async def _heartbeat(self) -> None:
        if self.config.heartbeat <= 0:
            return
        while True:
            await trio.sleep(self.config.heartbeat)
            if self.outbox.congested:
                continue  # heartbeats are advisory: skip them rather than pile them up
            for job in self.table.running():
                ev = event("progress", job=job.id, elapsed=job.elapsed, step=job.step)
                self.outbox.emit(job.tag(ev))

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
        if self.durable is not None:
            return await self.durable.submit(
                self,
                job,
                template=template,
                params=params,
                name=name,
                request_id=request_id,
                extra=extra,
            )
        self.check_accepting()
        spec = self.validate(job, template, params)
        if self._queue_is_full():
            await self._wait_for_room()
            self.check_accepting()  # shutdown may have begun while we waited for room
        return self._enqueue(spec, name, request_id, extra)

    def submit_nowait(
        self,
        job: Any = None,
        *,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        request_id: RequestId = None,
        **extra: Any,
    ) -> Job:
        """:meth:`submit` if it needs no waiting; else ``trio.WouldBlock``, before validating.

        It would wait when the queue is full, or with ``--state`` (the record is written first).
        A job that a worker would start at once and that completes at once is run here, before
        this returns (see the module docstring).
        """
        if self.durable is not None or self._queue_is_full():
            raise trio.WouldBlock
        self.check_accepting()
        if template is None and params is None and not extra and self._values_at_once():
            value = value_job(job)  # the commonest job, {"value": v}, checked as validate would
            if value is not NOT_A_VALUE:
                return self.table.complete_value(value, name=name, request_id=request_id)
        spec = self.validate(job, template, params)
        if self._worker_would_start_now():
            if runs_at_once(spec):
                record = self.table.accept(spec, name=name, request_id=request_id, **extra)
                self._run_at_once(record)
                return record
            lane = self._dispatcher.lane
            if lane is not None and (step := lane.takes(spec)) is not None:
                record = self.table.accept(spec, name=name, request_id=request_id, **extra)
                lane.start(record, step)  # a slot is free: no worker would wait for one
                return record
        return self._enqueue(spec, name, request_id, extra)

    def value_run(self) -> ValueRun:
        """A run of value jobs, completed at once together (``engine/_values.py``), for one
        reader to use run after run; it takes jobs while one would complete at once in
        :meth:`submit_nowait`."""
        return ValueRun(self.table, self._values_open)

    def _values_open(self) -> bool:
        if self.durable is not None or self.state is not ExecutorState.RUNNING:
            return False
        return not self._queue_is_full() and self._values_at_once()

    def _worker_would_start_now(self) -> bool:
        """Whether a job queued now would be the next one taken, by a worker free to take it."""
        table = self.table
        return (
            self._working and table.queued_count == 0 and table.running_count < self.config.workers
        )

    def _values_at_once(self) -> bool:
        """Whether a bare ``value`` job submitted now runs at once in one step
        (``JobTable.complete_value``): a worker would start it now, and nothing (``--trace``'s
        step events, a finish hook, a ``--state`` observer) needs its events one by one."""
        config = self.config
        return self._working and not config.trace and self.table.completes_value(config.workers)

    def takes_values_now(self) -> bool:
        """Whether a bare ``value`` job submitted now may complete in one step with ``--state``
        (its three events one row change of the next commit): a worker would start it now, no
        durable submit holds a queue slot (it would be accepted first), and nothing (``--trace``,
        a hook on every finish) needs its events one by one."""
        table = self.table
        return (
            self._working
            and self._reserved == 0
            and self.state is ExecutorState.RUNNING
            and table.queued_count == 0
            and table.running_count < self.config.workers
            and not self.config.trace
            and not table.finish_hooks
        )

    def _run_at_once(self, job: Job) -> None:
        """Start, run and finish ``job`` now: it can neither wait nor be interrupted, so it
        needs no scope (``JobTable.start`` with None) and no worker."""
        self.table.start(job, None)
        state, output, error = execute_at_once(job, self._services)
        self.table.finish(job, state, output=output, error=error)

    def _enqueue(
        self, spec: JobSpec, name: str | None, request_id: RequestId, extra: dict[str, Any]
    ) -> Job:
        """Accept the job and queue it; the caller made sure there is room."""
        record = self.table.accept(spec, name=name, request_id=request_id, **extra)
        self.queue.put_nowait(record)
        return record

    def cancel(
        self,
        job_id: str,
        request_id: RequestId = None,
        *,
        force: bool = False,
        grace: float | None = None,
    ) -> Job:
        """Cancel a job; its processes get ``grace`` seconds after SIGTERM (None: their steps'
        own), or none with ``force`` (SIGKILL at once)."""
        job = self.table.request_cancel(job_id, request_id, grace=grace, force=force)
        self._room.unpark_all()  # a cancelled queued job may free a slot
        return job

    def logs(self, job_id: str, after: int = 0) -> dict[str, Any]:
        """The ``logs`` reply's fields: the job's output lines numbered after ``after`` (a page
        of them), ``next`` to ask with, ``trimmed`` and ``done`` (finished, nothing more)."""
        job = self.table.get(job_id)
        log = job.log
        lines: list[dict[str, Any]] = []
        following, count, trimmed = after, 0, 0
        if log is not None:
            lines, following = log.page(after)
            count, trimmed = log.count, log.trimmed
        done = job.state in FINAL_STATES and following >= count
        return {"job": job.id, "lines": lines, "next": following, "trimmed": trimmed, "done": done}

    def define(self, name: str, job: Any) -> None:
        if not isinstance(job, dict):
            raise InvalidJob("", "a template's job must be a JSON object")
        validate_template(job, self.templates, name=name)
        if self.config.allow_run is not None:  # checked with the template's own defaults
            spec = validate_job(job, templates=self.templates, allow_unresolved=True)
            check_run_policy(spec, self.config.allow_run, unresolved_ok=True)
        self.templates[name] = job
        if self.durable is not None:
            self.durable.record_template(name, job)  # see sync_state: `defined` waits for it

    async def sync_state(self) -> None:
        """Wait until every state change so far is durable (a no-op without ``--state``)."""
        if self.durable is not None:
            await self.durable.sync()

    def stats(self) -> dict[str, Any]:
        return {
            **self.table.counts(),
            "workers": self.config.workers,
            "queue_size": self.config.queue_size,
        }

    def shutdown(self, mode: ShutdownMode = "drain") -> None:
        """Stop taking jobs; ``cancel`` also cancels every queued and running job."""
        if self.state is ExecutorState.CLOSED:
            return
        if mode == "cancel":
            self.state = ExecutorState.CANCELLING
            for job in [*self.table.queued(), *self.table.running()]:
                self.table.cancel(job, "cancelled by shutdown")
        elif self.state is ExecutorState.RUNNING:
            self.state = ExecutorState.DRAINING
        self._attached.shutdown(mode)
        self.queue.close()
        self._room.unpark_all()

    def kill(self) -> None:
        """Stop at once: cancel everything and SIGKILL every child, whatever its grace."""
        self.shutdown("cancel")
        self.runner.kill_all()
        self.cleanups.kill()
        self.workspaces.stop_hard()  # every `finished` now, big trees removed after the last event

    # -- durable state (--state): the primitives a store admits submits with ----------------

    def use_durable_state(self, durable: DurableState) -> None:
        """Make this executor durable: ``durable`` sees every transition and admits every submit
        (see :mod:`stepline.engine._durable`). Called once, before :meth:`run`."""
        self.durable = durable
        self.table.observer = durable
        self._dispatcher.use_durable(durable)  # no run lane; steps may wait for their start

    async def reserve_slot(self) -> None:
        """Wait for room in the queue, then hold one slot for a job about to be accepted.

        The slot is counted as taken until :meth:`accept_reserved` or :meth:`release_slot`, so
        a durable submit need not check for room again after its record is written.
        """
        await self._wait_for_room()
        self.check_accepting()
        self._reserved += 1

    def reserve_slot_nowait(self) -> None:
        """:meth:`reserve_slot` when the queue has room now; else ``trio.WouldBlock``."""
        if self._queue_is_full():
            raise trio.WouldBlock
        self.check_accepting()
        self._reserved += 1

    def release_slot(self) -> None:
        """Give back a slot held by :meth:`reserve_slot` for a submit that was refused."""
        self._reserved -= 1
        self._room.unpark_all()

    def accept_reserved(
        self,
        spec: JobSpec,
        *,
        job_id: str,
        name: str | None,
        request_id: RequestId,
        extra: Mapping[str, Any],
    ) -> Job:
        """Accept a job into the slot :meth:`reserve_slot` held, under an id taken earlier.

        No ``accepted`` is written here: the store committed it with the job's record.

        A shutdown that began since the slot was reserved does not refuse it (its record is
        durable already): it is accepted and cancelled at once, so its ``finished`` follows.

        A job that a worker would start now and that completes at once runs here, as in
        :meth:`submit_nowait`: its ``running`` and final state join the store's next commit as
        one row change, with its ``started`` and ``finished``, exactly as when a worker runs it
        between two commits. Not with ``write_ahead_start`` (``--on-restart fail``), where the
        steps must wait for the start's commit.
        """
        self._reserved -= 1
        write_ahead = self._dispatcher.write_ahead
        at_once = write_ahead is None and self._worker_would_start_now()  # before accept
        record = self.table.accept(
            spec, name=name, request_id=request_id, job_id=job_id, announce=False, **extra
        )
        if self.state is not ExecutorState.RUNNING:
            self.table.cancel(record, "cancelled by shutdown before it started")
        elif at_once and runs_at_once(spec):
            self._run_at_once(record)
            if self._room:
                self._room.unpark_all()  # its slot is free again, as when a worker takes a job
        else:
            self.queue.put_nowait(record)  # cannot block: the slot was held
        return record

    def has_room(self) -> bool:
        """Whether a submit would get a queue slot now, without waiting."""
        return not self._queue_is_full()

    # -- internals ---------------------------------------------------------------------------

    def check_accepting(self) -> None:
        """Raise ``ShuttingDown`` unless new jobs are taken."""
        if self.state is not ExecutorState.RUNNING:
            raise ShuttingDown(f"not accepting jobs: executor is {self.state.value}")

    def validate(
        self,
        job: Any = None,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> JobSpec:
        """The spec a submit of ``job`` (or ``template`` with ``params``) would run; raises the
        submit's ``CommandError`` (``InvalidJob``, ``UnknownTemplate``, ...) when it would be
        refused. Queues nothing: a schedule checks its job with it when it is made."""
        if (job is None) == (template is None):
            raise BadCommand("give exactly one of 'job' and 'template'")
        if template is not None:
            if template not in self.templates:
                raise UnknownTemplate(f"unknown template {template!r}")
            job = self.templates[template]
            check_arguments(template, job, params or {}, "params")
        spec = validate_job(job, params=params, templates=self.templates)
        check_run_policy(spec, self.config.allow_run)  # after substitution and `use` expansion
        if spec.on_finish and not (self.table.finish_hooks or self.table.callback_hooks):
            raise InvalidJob("on_finish", _NO_CALLBACKS)
        return spec

    async def _wait_for_room(self) -> None:
        while self._queue_is_full():
            if self.config.on_full == "reject":
                # The reader handles a whole chunk of input without yielding, so workers may not
                # have run since the queue filled: give them one turn before refusing.
                await trio.lowlevel.checkpoint()
                self.check_accepting()
                if self._queue_is_full():
                    raise QueueFull(f"the queue is full ({self.config.queue_size} jobs waiting)")
                continue
            await self._room.park()
            self.check_accepting()

    def _queue_is_full(self) -> bool:
        # jobs held by workers waiting for a slot (_slots.py) are still queued: they count
        held = self._slots.held()
        if len(self.queue) + self._reserved + held < self.queue.size:
            return False
        if len(self.queue) > self.table.queued_count:  # it holds tombstones: drop them
            self.queue.compact(lambda job: job.state is JobState.QUEUED)
        taken = len(self.queue) + self._reserved + (self._slots.held_queued() if held else 0)
        return taken >= self.queue.size


def _step_services(
    config: Config, outbox: Outbox, runner: Runner, http: HttpClient, cleanups: Cleanups
) -> Services:
    """What the steps of every job share (``engine/_interpret.Services``), from the settings."""
    return Services(
        outbox,
        runner,
        trace=config.trace,
        http=http,
        cleanups=cleanups,
        allow_run=config.allow_run,
        stream=config.stream,
        limits=config.limits,
        runner_name=config.runner,
    )


_NO_CALLBACKS = (
    "no callbacks are attached to this executor to run on_finish "
    "(stepline serve and stepline.open_executor attach them)"
)
