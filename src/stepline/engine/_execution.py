"""One job's body run to its outcome, and the outcome written as its ``finished``.

The body is awaited by a worker, or run at once when nothing in it can wait.

A worker awaits :func:`execute` inside the job's cancel scope. A job whose body can never await
(:func:`~stepline.engine._interpret.completes_at_once`: ``value`` and ``fail`` steps, in
sequences and ``try`` blocks, with no timeout or retry) needs neither the scope nor a worker:
:func:`execute_at_once` runs it synchronously, in whatever task accepted it. The executor does
that only when a worker would have started the job at once anyway (``Executor.submit_nowait``).

Both return the same :data:`Outcome`, and map failures the same way: a step's ``StepFailed`` is
the job's error, a feature that did not load is ``unavailable``, and anything else is a bug in
stepline, reported as an ``internal`` error and logged. :func:`conclude` writes the one
``finished``: a cancel or the job's deadline wins over what the steps returned.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from .._errors import StepFailed, Unavailable
from ..spec._model import JobSpec, Modifiers
from ._artifacts import collect_artifacts
from ._interpret import (
    Services,
    StepContext,
    completes_at_once,
    run_at_once,
    run_step,
    with_modifiers,
)
from ._jobs import Job, JobState, JobTable
from ._workspace import Workspace, WorkspacePool, without_files

__all__ = [
    "INTERRUPTED",
    "Outcome",
    "conclude",
    "execute",
    "execute_at_once",
    "failure",
    "finish_interrupted",
    "may_be_interrupted",
    "runs_at_once",
]

log = logging.getLogger("stepline")

Outcome: TypeAlias = tuple[JobState, Any, dict[str, Any] | None]
"""A job's final state, its output (on success) and its error (otherwise)."""

INTERRUPTED: Outcome = (JobState.CANCELLED, None, None)
"""The outcome of steps cut short by their scope; the executor turns it into cancelled or
timed_out, from what cut them short."""


async def execute(
    job: Job, services: Services, workspaces: WorkspacePool, artifacts_root: str
) -> Outcome:
    """Run the job's steps; a cancellation of its scope propagates to the worker."""
    workspace = None
    if not without_files(job.spec.body):
        workspace = Workspace(
            job.id,
            keep=job.spec.keep_workspace,
            emit=lambda ev: services.outbox.emit(job.tag(ev)),
            pool=workspaces,
        )
    spec = job.spec
    ctx = StepContext(job, services, workspace, spec.limits, spec.runner)
    try:
        if spec.retry is None:
            return JobState.SUCCEEDED, await run_step(spec.body, ctx), None
        return JobState.SUCCEEDED, await _retry_body(spec, ctx), None
    except Exception as exc:
        return failure(job, exc)
    finally:
        if spec.artifacts:  # copied out before the workspace goes (_artifacts.py)
            path = workspace.path() if workspace is not None and workspace.created else None
            job.artifacts = await collect_artifacts(path, spec.artifacts, artifacts_root, job.id)
        if workspace is not None and workspace.created:  # on first use only: _workspace.py
            await workspace.aclose()  # before `finished` is emitted


def runs_at_once(spec: JobSpec) -> bool:
    """Whether a job can run at once: steps that :func:`completes_at_once`, and nothing at the
    job level a worker must wait for (a timeout, a retry, artifacts to copy)."""
    if spec.timeout is not None or spec.retry is not None or spec.artifacts:
        return False
    return completes_at_once(spec.body)


def execute_at_once(job: Job, services: Services) -> Outcome:
    """Run the steps of a job whose body completes at once (no workspace, retry or artifacts)."""
    spec = job.spec
    try:
        output = run_at_once(spec.body, StepContext(job, services, None, spec.limits, spec.runner))
    except Exception as exc:
        return failure(job, exc)
    return JobState.SUCCEEDED, output, None


def conclude(table: JobTable, job: Job, outcome: Outcome) -> None:
    """Write the job's one ``finished``: an interruption wins over what the steps returned."""
    if job.cancel_reason is not None:
        finish_interrupted(table, job, JobState.CANCELLED, job.cancel_reason)
    elif may_be_interrupted(job) and job.scope is not None and job.scope.cancel_called:
        message = f"job timed out after {job.spec.timeout:g}s"
        finish_interrupted(table, job, JobState.TIMED_OUT, message)
    else:
        state, output, error = outcome
        table.finish(job, state, output=output, error=error)


def finish_interrupted(table: JobTable, job: Job, state: JobState, message: str) -> None:
    """Finish a running job as ``cancelled`` or ``timed_out``, naming the step it was in."""
    if job.state is JobState.RUNNING:
        kind = "cancelled" if state is JobState.CANCELLED else "timeout"
        error = {"type": kind, "message": message, "step": job.step}
        table.finish(job, state, error=error)


def may_be_interrupted(job: Job) -> bool:
    """Whether the job's scope can have been cancelled: only a cancel (which records its reason
    first, ``JobTable.cancel``) or the job's own deadline cancels it. Asking the scope
    (``cancel_called`` reads the clock) for every other job shows on the trivial path."""
    return job.cancel_reason is not None or job.spec.timeout is not None


def failure(job: Job, exc: Exception) -> Outcome:
    """The outcome of steps that raised ``exc``."""
    if isinstance(exc, StepFailed):
        return JobState.FAILED, None, exc.to_wire()
    if isinstance(exc, Unavailable):  # a feature its graph needed at run time did not load
        return JobState.FAILED, None, {"type": exc.code, "message": exc.message, "step": job.step}
    log.exception("internal error in job %s", job.id, exc_info=exc)
    return JobState.FAILED, None, {"type": "internal", "message": _describe(exc), "step": job.step}


async def _retry_body(spec: JobSpec, ctx: StepContext) -> Any:
    """The job's steps under the job-level ``retry``."""
    mods = Modifiers(retry=spec.retry)
    return await with_modifiers(lambda: run_step(spec.body, ctx), mods, None, ctx)


def _describe(exc: BaseException) -> str:
    """``internal error: ZeroDivisionError: ...``, looking through nursery exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"internal error: {type(exc).__name__}: {exc}"
