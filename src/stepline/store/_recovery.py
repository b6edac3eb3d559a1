"""Recovery at start: what a previous run of ``stepline serve --state`` left, put back to work.

Two steps, split around the ``ready`` event:

* :func:`restore` (before ``ready``, synchronous): templates come back; finished records come
  back for ``status`` (at most ``--keep``); jobs that were queued or running are validated again
  from their stored requests and put back in the job table as queued; the id counter continues.
* :func:`resume` (after ``ready`` and the events the last run had not written, before any
  command is read): each unfinished job gets a ``recovered`` event, logged like every lifecycle
  event and carrying its submit's request ``id``, then its lifecycle continues. A job that was
  queued is queued again (``requeued``). A job that was running is run again (``rerun``) or,
  with ``--on-restart fail``, finished at once as ``failed`` with error type ``interrupted``
  (``failed``). A job whose cancel had been recorded (``cancelling``) is finished
  ``cancelled`` (``cancelled``): a cancel the driver was told of is never undone.

Why jobs are validated again instead of stored as specs: see
:func:`stepline.store._admit.encode_request`.
A job that no longer validates (a newer stepline is stricter) is finished as ``interrupted`` with
the reason, rather than blocking the start or vanishing.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import trio
from attrs import frozen

from .._errors import CommandError
from ..engine._executor import Executor
from ..engine._jobs import Job, JobState
from ..spec._model import JobSpec, Seq
from ..spec._policy import check_run_policy
from ..spec._validate import validate_job
from ..wire._events import RequestId, event
from ._model import Snapshot, StoredJob
from ._store import Store

__all__ = ["Recovered", "RestartPolicy", "restore", "resume"]

RestartPolicy: TypeAlias = Literal["rerun", "fail"]

# Finished jobs never run again, so their spec is not kept: their records stand on this.
_NOT_KEPT = JobSpec(body=Seq(path="", steps=()))


@frozen
class Recovered:
    """One unfinished job of the previous run and what recovery does with it."""

    job: Job
    was: str  # its state when the previous run stopped: "queued", "running" or "cancelling"
    action: Literal["requeued", "rerun", "failed", "cancelled"]
    reason: str = ""  # why it failed or was cancelled
    request_id: RequestId = None  # the `id` of the submit that made it


def restore(executor: Executor, snapshot: Snapshot, policy: RestartPolicy) -> list[Recovered]:
    """Put the snapshot back into the executor (no events yet); returns the unfinished jobs."""
    executor.templates.update(snapshot.templates)
    table = executor.table
    table.continue_ids(snapshot.next_id)
    for row in snapshot.finished:
        table.restore(_finished_job(row))
    plan = [_recover(executor, row, policy) for row in snapshot.unfinished]
    for item in plan:
        table.restore(item.job)
    return plan


async def resume(executor: Executor, store: Store, plan: list[Recovered]) -> None:
    """Announce each recovered job, fail the ones the policy fails, and queue the rest."""
    for item in plan:
        job = item.job
        recovered = event("recovered", job=job.id, state=item.was, action=item.action)
        if item.request_id is not None:
            recovered["id"] = item.request_id
        store.log_event(recovered)
        if item.action == "failed":
            error = {"type": "interrupted", "message": item.reason, "step": ""}
            executor.table.finish(job, JobState.FAILED, error=error)
        elif item.action == "cancelled":
            error = {"type": "cancelled", "message": item.reason, "step": ""}
            executor.table.finish(job, JobState.CANCELLED, error=error)
        elif item.action == "rerun":
            store.requeued(job)  # a second crash before it starts finds it queued, not running
    await _requeue(executor, [item.job for item in plan if item.action != "failed"])


async def _requeue(executor: Executor, jobs: list[Job]) -> None:
    """Queue recovered jobs, waiting for room as workers take them."""
    for job in jobs:
        if job.state is not JobState.QUEUED:
            continue  # cancelled meanwhile
        try:
            await executor.queue.put(job)
        except trio.ClosedResourceError:  # shut down before it could be queued
            executor.table.cancel(job, "cancelled by shutdown before it started")


def _finished_job(row: StoredJob) -> Job:
    state = JobState(row.state)
    job = Job(id=row.id, spec=_NOT_KEPT, name=row.name, state=state)
    job.started_at, job.finished_at = 0.0, row.elapsed  # so `elapsed` reads as it was
    if state is JobState.SUCCEEDED:
        job.output = row.result
    else:
        job.error = row.result
    return job


def _recover(executor: Executor, row: StoredJob, policy: RestartPolicy) -> Recovered:
    request_id = row.request.get("id")
    was_running = row.state == "running"
    if row.state == "cancelling":
        reason = "cancelled by request (stepline stopped while the job was being cancelled)"
        return Recovered(_doomed_job(row, request_id), row.state, "cancelled", reason, request_id)
    if was_running and policy == "fail":
        reason = "stepline stopped while the job was running (--on-restart fail)"
        return Recovered(_doomed_job(row, request_id), row.state, "failed", reason, request_id)
    try:
        spec = _validate_again(executor, row.request)
    except (CommandError, KeyError, TypeError) as exc:
        reason = f"the job could not be recovered: {_message(exc)}"
        return Recovered(_doomed_job(row, request_id), row.state, "failed", reason, request_id)
    job = Job(id=row.id, spec=spec, name=row.name, state=JobState.QUEUED, request_id=request_id)
    action: Literal["rerun", "requeued"] = "rerun" if was_running else "requeued"
    return Recovered(job, row.state, action, "", request_id)


def _validate_again(executor: Executor, request: dict[str, Any]) -> JobSpec:
    """The stored request, validated against the templates it was accepted with, and checked
    against today's ``--allow-run``."""
    templates = {**executor.templates, **(request.get("templates") or {})}
    spec = validate_job(request["job"], params=request.get("params"), templates=templates)
    check_run_policy(spec, executor.config.allow_run)
    return spec


def _doomed_job(row: StoredJob, request_id: RequestId) -> Job:
    """A job to be finished as ``interrupted`` (or ``cancelled``): restored as running (the
    lifecycle's only way to ``failed``), without a start time, so its ``elapsed`` is 0 as for a
    job that never ran. Its ``finished`` carries its submit's ``id``, as its other events did."""
    return Job(
        id=row.id, spec=_NOT_KEPT, name=row.name, state=JobState.RUNNING, request_id=request_id
    )


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, CommandError) else f"{type(exc).__name__}: {exc}"
