"""Running a graph of tasks inside one job (and one worker slot).

Every task of a :class:`~stepline.spec._model.Graph` becomes a trio task in one nursery. It waits
for the tasks it ``needs`` (an :class:`trio.Event` each), then decides by its ``if``:

* ``success`` (the default): run if every need succeeded, else it is ``skipped``;
* ``failure``: run if at least one need failed, else ``skipped``;
* ``always``: run once every need has finished, whatever their outcome.

Independent tasks therefore run concurrently, at most ``limit`` at once (a
:class:`trio.CapacityLimiter` held only while a task's steps run, never while it waits). A failed
task does not cancel the others, unlike a failed ``par`` branch: the graph runs everything its
``if`` rules allow, so ``always`` clean-up tasks see the whole outcome. The job fails if any
task failed, with the error of the first failure plus ``task``; otherwise its output is an
object of every task's output (null for a skipped task).

**Cancellation.** When the job is cancelled or times out, running tasks are cancelled (their
``task`` event says ``cancelled``) and tasks that had not started are ``skipped`` — except
``always`` tasks: they still run once their needs have stopped, shielded from the cancellation
for at most :data:`CLEANUP_GRACE` seconds in all, so clean-up happens even then. A hard stop (a
second SIGINT) cancels those shields at once through :class:`Cleanups`.

Each task announces itself with ``task`` events: ``started``, then one of ``succeeded``,
``failed`` (with ``error``), ``skipped``, ``cancelled``. A task that never starts gets only the
final one. Tasks of a graph inside a template (``use``) carry ``graph``: that graph's path.

**Matrices.** The instances of a matrix task (``test[1]``, ``test[2]``: see
:mod:`stepline.spec._matrix`) are tasks like any other here; their events carry ``matrix``, the
instance's values. The matrix task's own name holds the list of its instances' outputs, in
matrix order, for ``${tasks.test.output}`` and the job's output; it is filled in as each
instance ends (before any task that needs them can start).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from .._errors import InvalidJob, StepFailed
from ..spec._model import Deferred, Graph, Step, Task
from ..spec._refs import RefProblem, Scope, Unit
from ..spec._validate import resolve_unit
from ..wire._events import event

if TYPE_CHECKING:
    from ._interpret import StepContext

__all__ = ["CLEANUP_GRACE", "Cleanups", "resolve", "run_deferred", "run_graph"]

CLEANUP_GRACE: Final = 10.0
"""Seconds that ``always`` tasks may run, all together, after their job was cancelled."""


class Cleanups:
    """The shielded clean-up scopes of every running graph of one executor.

    A shield keeps a clean-up running while its job is being cancelled; a hard stop must still
    end it at once, and only this registry can reach it. ``Executor.kill`` calls :meth:`kill`.
    """

    def __init__(self) -> None:
        self._scopes: set[trio.CancelScope] = set()
        self.killed = False

    @contextmanager
    def shield(self, deadline: float) -> Iterator[trio.CancelScope]:
        """A cancel scope shielded from outside cancellation until ``deadline`` or a kill."""
        scope = trio.CancelScope(shield=True, deadline=deadline)
        if self.killed:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def kill(self) -> None:
        """Cancel every clean-up now, and any started later."""
        self.killed = True
        for scope in list(self._scopes):
            scope.cancel()


class _JobValues:
    """``${job.id}`` and ``${job.workspace}`` of the running job (the spec's ``JobValues``)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: StepContext) -> None:
        self._ctx = ctx

    def get(self, field: str) -> str:
        if field == "id":
            return self._ctx.job.id
        workspace = self._ctx.workspace
        if workspace is None:
            raise RefProblem("${job.workspace}: this job has no workspace")
        try:
            return workspace.path()
        except OSError as exc:
            raise RefProblem(f"${{job.workspace}}: cannot create the workspace: {exc}") from None


def resolve(unit: Unit, scope: Scope) -> Step:
    """Validate ``unit`` again under ``scope``, where its references have values.

    A problem now is the job's data, not its shape (that was checked at submit): it fails the
    unit with type ``invalid_reference``; the message names the field.
    """
    try:
        return resolve_unit(unit, scope)
    except InvalidJob as exc:
        raise StepFailed("invalid_reference", exc.message, unit.path) from None


async def run_deferred(step: Deferred, ctx: StepContext) -> Any:
    """A job body that refers to ``${job.*}``: resolved now, then run."""
    from ._interpret import run_step

    return await run_step(resolve(step.later, Scope(job=_JobValues(ctx))), ctx)


async def run_graph(graph: Graph, ctx: StepContext) -> dict[str, Any]:
    """Run every task of ``graph``; the output maps each task to its output."""
    return await _GraphRun(graph, ctx).run()


class _GraphRun:
    """The state of one run of a graph: each task's status, outputs, and "done" events."""

    def __init__(self, graph: Graph, ctx: StepContext) -> None:
        self.graph = graph
        self.ctx = ctx
        self.status: dict[str, str] = {}  # "running", then the final status
        self.outputs: dict[str, Any] = {}
        self.done = {task.name: trio.Event() for task in graph.tasks}
        self.failure: StepFailed | None = None  # the first task that failed
        self.limiter = trio.CapacityLimiter(graph.limit) if graph.limit else None
        self.cleanup_deadline: float | None = None
        if not graph.path:  # the job's own graph: what succeeded is its `partial` if it fails
            ctx.job.partial = {}

    async def run(self) -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            for task in self.graph.tasks:
                nursery.start_soon(self._task, task)
        if self.failure is not None:
            raise self.failure
        return {key: self.outputs.get(key) for key in _output_keys(self.graph)}

    async def _task(self, task: Task) -> None:
        try:
            await self._wait_for(task)
            if self._should_run(task):
                await self._run(task)
            else:
                self._final(task, "skipped")
        except trio.Cancelled:
            if task.when == "always" and task.name not in self.status:
                await self._cleanup(task)
            raise
        finally:
            state = self.status.get(task.name)
            if state is None or state == "running":  # cancelled before or while running
                self._final(task, "skipped" if state is None else "cancelled")
            if task.group is not None:
                names = self.graph.groups[task.group]
                self.outputs[task.group] = [self.outputs.get(name) for name in names]
            self.done[task.name].set()

    async def _wait_for(self, task: Task) -> None:
        for need in task.needs:
            await self.done[need].wait()

    def _should_run(self, task: Task) -> bool:
        outcomes = [self.status[need] for need in task.needs]
        if task.when == "always":
            return True
        if task.when == "never":  # switched off by a ${params.X} that is false
            return False
        if task.when == "failure":
            return "failed" in outcomes
        return all(outcome == "succeeded" for outcome in outcomes)

    async def _run(self, task: Task) -> None:
        if self.limiter is None:
            await self._attempt(task)
        else:
            async with self.limiter:
                await self._attempt(task)

    async def _attempt(self, task: Task) -> None:
        from ._interpret import run_step

        self.status[task.name] = "running"
        self._emit(task, "started")
        try:
            body: Step = task.body
            if task.later is not None:
                values = _JobValues(self.ctx)
                body = resolve(task.later, Scope(values, task.later.graph, self.outputs))
            output = await run_step(body, self.ctx)
        except StepFailed as exc:
            self._failed(task, exc)
            return
        self.outputs[task.name] = output
        if not self.graph.path and self.ctx.job.partial is not None:
            self.ctx.job.partial[task.name] = output
        self._final(task, "succeeded")

    async def _cleanup(self, task: Task) -> None:
        """An ``always`` task that had not started when the graph was cancelled: it runs anyway
        once its needs have stopped, shielded, within the graph's clean-up grace."""
        if self.cleanup_deadline is None:
            self.cleanup_deadline = trio.current_time() + CLEANUP_GRACE
        cleanups = self.ctx.services.cleanups
        shield = (
            cleanups.shield(self.cleanup_deadline)
            if cleanups is not None
            else trio.CancelScope(shield=True, deadline=self.cleanup_deadline)
        )
        with shield:
            await self._wait_for(task)
            await self._run(task)

    def _failed(self, task: Task, exc: StepFailed) -> None:
        if self.failure is None:
            extra = {**exc.extra, "task": task.name}
            self.failure = StepFailed(exc.type, exc.message, exc.step, exc.name, extra)
        self._final(task, "failed", error=exc.to_wire())

    def _final(self, task: Task, status: str, **fields: Any) -> None:
        self.status[task.name] = status
        self._emit(task, status, **fields)

    def _emit(self, task: Task, status: str, **fields: Any) -> None:
        if self.graph.path:
            fields["graph"] = self.graph.path
        if task.matrix is not None:
            fields["matrix"] = task.matrix
        job = self.ctx.job
        ev = event("task", job=job.id, task=task.name, status=status, **fields)
        self.ctx.services.outbox.emit(job.tag(ev))


def _output_keys(graph: Graph) -> list[str]:
    """The keys of a graph's output: each task, or matrix task (once), in the order written."""
    keys = [task.group or task.name for task in graph.tasks]
    return list(dict.fromkeys(keys)) if graph.groups else keys
