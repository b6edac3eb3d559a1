"""The run lane: a plain ``run`` job started on a spawner thread and finished where its result
arrives, with no task of its own.

Why: a ``{"run": ["true"]}`` job on the worker path costs the event loop about twice what the
whole of a thread pool's process spends per job (NOTES.md, Performance, "Session 7"): the
worker's task, the job's coroutines (``execute``, ``run_step``, the ``run`` interpreter,
``run_process``, the runner's ``wait``), a step context and a workspace object per job, and a
task switch at each ``await``. Most such jobs are short and silent, and end during the spawner
thread's brief wait after the start (:mod:`stepline.runners._early`): for them the lane does
the same work in two synchronous stretches, :meth:`RunLane.start` (on the submit, or in the
worker that took the job from the queue) and the spawner's hand-over, where
:meth:`RunLane._spawned` reaps the child, checks its tree is gone, gives the workspace back
and writes ``finished``; the slot it frees starts the queue's next lane job right there
(``Dispatcher.lane_slot_freed``). The hand-over already batches every result that arrives
together (:mod:`stepline.runners._threads`), so no task is woken per job.

Which jobs (:func:`plain_run`): one ``run`` step as the job's body, local, with nothing to
feed, no limits, no timeout or retry (of the step or the job), no artifacts, callbacks or kept
workspace, and a pooled workspace directory to run in (or a ``cwd`` of its own); no
``--trace``, ``--state`` or custom runner. Anything else takes the worker path, as before. The
lane writes the same events through the same table transitions (``accept``, ``start``,
``finish`` via :func:`~stepline.engine._execution.conclude`), with the same record, output and
errors: its result goes through the ``run`` interpreter's own mapping
(:func:`~stepline.engine._interpret.run_output`), and ``tests/server/test_run_lane.py`` holds
the two paths to the same answers.

What it keeps:

* The ``--workers`` bound: a lane job holds a slot while it runs (:mod:`._slots`).
* Cancel: a lane job's scope is a :class:`LaneScope`. A cancel during the spawner's wait
  interrupts it (the thread's wake-up pipe), and the job then gets a task, as does any job
  whose process did not end silently on the thread (output to capture, a longer run, a tree
  left behind): :meth:`RunLane._finish` drives the process as the ``run`` step would, inside a
  real cancel scope, so capture, streaming, the stop (SIGTERM, grace, SIGKILL) and the
  ``cancelled`` outcome are the worker path's own code.
* Shutdown: :meth:`RunLane.drained` is awaited after the workers have ended, so a drain waits
  for lane jobs, and a cancelling shutdown cancels them as running jobs.
* Workspace: taken from the pool and handed back (or removed, in a task, before ``finished``)
  as :class:`~stepline.engine._workspace.Workspace` does.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ..runners._base import Launch, ProcessResult, ProcessStartError, drive_process
from ..spec._limits import NO_LIMITS
from ..spec._model import JobSpec, Run
from ..spec._policy import refusal
from ._execution import INTERRUPTED, Outcome, conclude, failure, finish_interrupted
from ._interpret import Services, run_output, step_sink
from ._jobs import Job, JobState, JobTable
from ._run_result import start_failure
from ._workspace import WorkspacePool

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..runners._base import StreamName
    from ..runners._deferred import DeferredRunner
    from ..runners._local import LocalProcess, LocalRunner
    from ._output import StepOutput

__all__ = ["LaneScope", "RunLane", "plain_run"]

log = logging.getLogger("stepline")


def plain_run(spec: JobSpec, services: Services) -> Run | None:
    """The job's one ``run`` step when the lane may run the job (module docstring), else None.
    (A pooled workspace is asked for by :meth:`RunLane.takes`.)"""
    step = spec.body
    if type(step) is not Run:
        return None
    assert isinstance(step, Run)  # (for mypy: `type(step) is` does not narrow)
    mods = step.mods
    if (
        spec.timeout is not None
        or spec.retry is not None
        or spec.artifacts
        or spec.on_finish
        or spec.keep_workspace
        or spec.limits is not NO_LIMITS
        or mods.timeout is not None
        or mods.retry is not None
        or step.stdin is not None
        or step.limits is not NO_LIMITS
        or step.network
        or services.limits is not NO_LIMITS
        or (step.runner or spec.runner or services.runner_name) != "local"
    ):
        return None
    if services.allow_run is not None and refusal(step, services.allow_run) is not None:
        return None  # the worker path refuses it, as it always has
    return step


class LaneScope:
    """A lane job's scope, as the job table uses it (``cancel``, ``cancel_called``).

    Until the job has a task, a cancel interrupts its spawner's wait for the process's end
    (:meth:`~stepline.runners._local.LocalProcess.interrupt`); the hand-over then gives the job
    a task, whose real scope :meth:`enter` makes, already cancelled.
    """

    __slots__ = ("_scope", "cancel_called", "process")

    def __init__(self) -> None:
        self.cancel_called = False
        self.process: LocalProcess | None = None  # set once it is made
        self._scope: trio.CancelScope | None = None

    def cancel(self) -> None:
        self.cancel_called = True
        if self._scope is not None:
            self._scope.cancel()
        elif self.process is not None:
            self.process.interrupt()

    def enter(self) -> trio.CancelScope:
        """The scope of the job's task, cancelled already if the job is."""
        scope = self._scope = trio.CancelScope()
        if self.cancel_called:
            scope.cancel()
        return scope


class RunLane:
    """Runs plain ``run`` jobs without a task per job (module docstring)."""

    def __init__(
        self,
        table: JobTable,
        services: Services,
        workspaces: WorkspacePool,
        runner: DeferredRunner,
        released: Callable[[], None],
    ) -> None:
        self._table = table
        self._services = services
        self._workspaces = workspaces
        self._runner = runner
        self._released = released  # a lane job ended: its slot is free (Slots.released)
        self._local: LocalRunner | None = None  # the local runner, found at the first start
        self._nursery: trio.Nursery | None = None  # tasks of jobs that need one
        self._running = 0
        self._idle: trio.Event | None = None  # set when _running falls to 0

    def takes(self, spec: JobSpec) -> Run | None:
        """The job's step, if the lane can run the job now; else None."""
        if self._nursery is None:
            return None
        step = plain_run(spec, self._services)
        if step is None or (step.cwd is None and not self._workspaces.has_free()):
            return None  # no directory at hand: a new one is made off the loop, by the worker path
        return step

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery of the lane's tasks until cancelled; then wait for every lane
        job (a cancel from outside: they end as interrupted, as the workers' jobs do)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None if not self._running else nursery
                with trio.CancelScope(shield=True):
                    await self.drained()
                self._nursery = None

    async def drained(self) -> None:
        """Until no lane job is running."""
        while self._running:
            self._idle = trio.Event()
            await self._idle.wait()

    # -- one job ---------------------------------------------------------------------------

    def start(self, job: Job, step: Run) -> None:
        """Start ``job`` (queued, its step ``step`` as :meth:`takes` said): running now, its
        process started on a spawner thread, finished when the thread hands it back."""
        scope = LaneScope()
        self._table.start(job, scope)
        self._running += 1
        job.step = step.path
        try:
            self._launch(job, step, scope)
        except Exception as exc:  # a bug (the runner's set-up, say): the job fails as `internal`
            self._bug(job, exc)

    def _launch(self, job: Job, step: Run, scope: LaneScope) -> None:
        path = None if step.cwd is not None else self._workspaces.take()
        sink = _SinkOnFirstUse(step, job, self._services)
        launch = Launch(step.argv, step.env, step.cwd or path, None, step.grace, output=sink)
        try:
            process = self._local_runner().start(launch)
        except ProcessStartError as exc:
            job.step = ""
            self._end(job, path, failure(job, start_failure(step, exc)))
            return
        scope.process = process
        if not process.brief:  # the thread must not wait for its end (a cgroup): a task does
            self._in_task(job, step, process, launch, path)
            return
        process.spawn_soon(functools.partial(self._spawned, job, step, process, launch, path))

    def _spawned(
        self,
        job: Job,
        step: Run,
        process: LocalProcess,
        launch: Launch,
        path: str | None,
        started: outcome.Outcome[Any],
    ) -> None:
        """On the event loop, from the spawners' hand-over: the child started (and maybe
        ended). Must not raise: it runs in trio's ``run_sync_soon`` callback."""
        try:
            try:
                child, ended = started.unwrap()
            except ProcessStartError as exc:
                process.close()
                job.step = ""
                self._end(job, path, failure(job, start_failure(step, exc)))
                return
            process.spawned(child, ended)
            result = process.end_now() if ended else None
            if result is None:
                self._in_task(job, step, process, launch, path)
                return
            process.close()
            self._end(job, path, self._outcome(job, step, result), result)
        except Exception as exc:  # a bug: the job fails as `internal`, the server goes on
            self._bug(job, exc)

    def _in_task(
        self, job: Job, step: Run, process: LocalProcess, launch: Launch, path: str | None
    ) -> None:
        assert self._nursery is not None  # lane jobs run only while serve() holds it
        self._nursery.start_soon(self._finish, job, step, process, launch, path)

    async def _finish(
        self, job: Job, step: Run, process: LocalProcess, launch: Launch, path: str | None
    ) -> None:
        """The rest of the job in a task of its own: the ``run`` step's lifecycle
        (:func:`~stepline.runners._base.drive_process`: capture, wait, stop on a cancel),
        inside the job's real cancel scope."""
        assert isinstance(job.scope, LaneScope)
        done: Outcome = INTERRUPTED
        result = None
        try:
            with job.scope.enter():
                try:
                    result = await drive_process(process, launch, job.stop_orders)
                except ProcessStartError as exc:  # the spawn itself happened in this task
                    job.step = ""
                    done = failure(job, start_failure(step, exc))
                except Exception as exc:  # a bug: `internal`, as execute() reports it
                    done = failure(job, exc)
                else:
                    done = self._outcome(job, step, result)
        except BaseException:  # cancelled from outside: ended as the workers end theirs
            with trio.CancelScope(shield=True):
                await self._give_back(path, result)
            finish_interrupted(self._table, job, JobState.CANCELLED, "executor was cancelled")
            self._ended(job)
            raise
        await self._give_back(path, result)
        self._conclude(job, done)

    # -- the end ---------------------------------------------------------------------------

    def _outcome(self, job: Job, step: Run, result: ProcessResult) -> Outcome:
        """What the ``run`` interpreter makes of ``result``, as the job's outcome."""
        job.step = ""  # as run_step leaves it once its step returned or failed
        try:
            return JobState.SUCCEEDED, run_output(step, result), None
        except Exception as exc:
            return failure(job, exc)

    def _end(
        self, job: Job, path: str | None, done: Outcome, result: ProcessResult | None = None
    ) -> None:
        """Give the workspace back and write ``finished``, now; or, when the directory must be
        removed first (something was left in it), in a task."""
        if path is not None and not self._workspaces.give_back(path, _groups(result)):
            assert self._nursery is not None
            self._nursery.start_soon(self._remove_then_conclude, job, path, done)
            return
        self._conclude(job, done)

    async def _remove_then_conclude(self, job: Job, path: str, done: Outcome) -> None:
        await self._workspaces.remove(path)
        self._conclude(job, done)

    async def _give_back(self, path: str | None, result: ProcessResult | None) -> None:
        if path is not None and not self._workspaces.give_back(path, _groups(result)):
            await self._workspaces.remove(path)

    def _conclude(self, job: Job, done: Outcome) -> None:
        conclude(self._table, job, done)
        self._ended(job)

    def _ended(self, job: Job) -> None:
        scope = job.scope
        if isinstance(scope, LaneScope):
            # The process's launch holds the job's sink, which holds the job, which holds this
            # scope: let go of the process, so an ended job leaves no cycle for the collector
            # (with `--keep 0` every record, its output too, would wait for a collection).
            scope.process = None
        self._running -= 1
        if not self._running and self._idle is not None:
            self._idle.set()
        if self._services.outbox.congested and self._nursery is not None:
            # A `finished` may carry megabytes: as a worker waits for the reader before its
            # next job, the slot is handed on only once the reader has caught up.
            self._nursery.start_soon(self._release_when_writable)
        else:
            self._released()

    async def _release_when_writable(self) -> None:
        await self._services.outbox.wait_writable()
        self._released()

    def _bug(self, job: Job, exc: Exception) -> None:
        log.exception("internal error in the run lane, job %s", job.id, exc_info=exc)
        if job.state is JobState.RUNNING:
            self._conclude(job, failure(job, exc))

    def _local_runner(self) -> LocalRunner:
        local = self._local
        if local is None:
            from ..runners._local import LocalRunner  # start-up time: made on first use
            from ..runners._sandbox import SandboxRunner

            runner = self._runner.runner()
            host = runner.host if isinstance(runner, SandboxRunner) else runner
            assert isinstance(host, LocalRunner)
            local = self._local = host
        return local


class _SinkOnFirstUse:
    """A lane job's output sink (``step_sink``: the job's log, and ``output`` events if
    streamed), made when the runner first uses it for more than the streams' ends.

    Why: most lane jobs' processes end silently on their spawner thread, and their sink is only
    told that both streams ended, which for a sink nothing was written to is nothing; making it
    (a ``StepOutput`` and the job's ``JobLog``) cost each such job a few µs of the loop's
    (NOTES.md, Performance, "Session 9"). A job without a log answers ``logs`` as one with an
    empty log does (no lines, ``next`` as asked), and its retention weighs the same.
    """

    __slots__ = ("_job", "_services", "_sink", "_step")

    def __init__(self, step: Run, job: Job, services: Services) -> None:
        self._step = step
        self._job = job
        self._services = services
        self._sink: StepOutput | None = None

    def _made(self) -> StepOutput:
        sink = self._sink
        if sink is None:
            sink = self._sink = step_sink(self._step, self._job, self._services)
        return sink

    def write(self, stream: StreamName, data: bytes) -> None:
        self._made().write(stream, data)

    def eof(self, stream: StreamName) -> None:
        if self._sink is not None:  # else nothing was written: no partial line to complete
            self._sink.eof(stream)

    @property
    def congested(self) -> bool:
        return self._made().congested

    async def wait_writable(self) -> None:
        await self._made().wait_writable()


def _groups(result: ProcessResult | None) -> tuple[int, ...]:
    """The process group to check before the directory is reused (none once the runner saw
    it gone), as the ``run`` interpreter tells the workspace."""
    if result is None or not result.pid or result.group_gone:
        return ()
    return (result.pid,)
