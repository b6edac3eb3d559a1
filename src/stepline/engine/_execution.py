"""One job's body run to its outcome: awaited by a worker, or at once when nothing in it can wait.

A worker awaits :func:`execute` inside the job's cancel scope. A job whose body can never await
(:func:`~stepline.engine._interpret.completes_at_once`: ``value`` and ``fail`` steps, in
sequences and ``try`` blocks, with no timeout or retry) needs neither the scope nor a worker:
:func:`execute_at_once` runs it synchronously, in whatever task accepted it. The executor does
that only when a worker would have started the job at once anyway (``Executor.submit_nowait``).

Both return the same :data:`Outcome`, and map failures the same way: a step's ``StepFailed`` is
the job's error, a feature that did not load is ``unavailable``, and anything else is a bug in
stepline, reported as an ``internal`` error and logged.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from .._errors import StepFailed, Unavailable
from ..spec._model import JobSpec, Modifiers
from ._artifacts import collect_artifacts
from ._interpret import Services, StepContext, run_at_once, run_step, with_modifiers
from ._jobs import Job, JobState
from ._workspace import Workspace, WorkspacePool, without_files

__all__ = ["INTERRUPTED", "Outcome", "execute", "execute_at_once"]

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
        return _failure(job, exc)
    finally:
        if spec.artifacts:  # copied out before the workspace goes (_artifacts.py)
            path = workspace.path() if workspace is not None and workspace.created else None
            job.artifacts = await collect_artifacts(path, spec.artifacts, artifacts_root, job.id)
        if workspace is not None and workspace.created:  # on first use only: _workspace.py
            await workspace.aclose()  # before `finished` is emitted


def execute_at_once(job: Job, services: Services) -> Outcome:
    """Run the steps of a job whose body completes at once (no workspace, retry or artifacts)."""
    spec = job.spec
    try:
        output = run_at_once(spec.body, StepContext(job, services, None, spec.limits, spec.runner))
    except Exception as exc:
        return _failure(job, exc)
    return JobState.SUCCEEDED, output, None


def _failure(job: Job, exc: Exception) -> Outcome:
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
