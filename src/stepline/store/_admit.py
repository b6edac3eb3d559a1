"""Durable submits: a job is on disk before its ``accepted`` is written.

A submit is *staged* (:func:`stage`: validated, given a queue slot and an id, its record added to
the store's open batch) and then *settled* (:func:`settle`: once that batch is committed, the job
is accepted and queued). Between the two the job holds its queue slot
(:meth:`Executor.reserve_slot <stepline.engine._executor.Executor.reserve_slot>`), so nothing
needs checking again after the durable write, however many submits are staged meanwhile.
Staging many submits before settling any lets one commit carry them all (group commit):
:mod:`stepline.store._pipeline` does that for ``stepline serve``; :func:`submit_durably` is the
one-at-a-time form behind ``Executor.submit``.

The stored request is the raw job JSON, the submit's ``params``, and the definitions of the
templates it uses (:func:`encode_request`): recovery validates it again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs
import orjson
import trio

from .._errors import InvalidJob, StoreFailed
from ..engine._executor import Executor
from ..engine._jobs import Job, JobTable
from ..spec._model import JobSpec, Use
from ..wire._events import RequestId, numbered_completed_lines

if TYPE_CHECKING:
    from ._pipeline import ValueBatch
    from ._store import Store

__all__ = [
    "StagedJob",
    "accept_staged",
    "complete_values",
    "encode_request",
    "settle",
    "settle_now",
    "stage",
    "stage_nowait",
    "stage_value",
    "submit_durably",
]


class StagedJob(NamedTuple):
    """A submit that passed validation and holds a queue slot and a job id, and whose record is
    being written. It becomes a job once batch ``gen`` is committed (:func:`settle`).

    A tuple: one is made per durable submit on the hot path, and a frozen attrs class cost
    about three times as much to build."""

    job_id: str
    spec: JobSpec
    name: str | None
    request_id: RequestId
    extra: dict[str, Any]
    gen: int


async def stage(
    executor: Executor,
    store: Store,
    job: Any = None,
    *,
    template: str | None = None,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    request_id: RequestId = None,
    extra: dict[str, Any] | None = None,
) -> StagedJob:
    """Validate a submit, take a queue slot and an id, and start writing its record.

    Not accepted yet: :func:`settle` accepts it once the record is committed.
    """
    executor.check_accepting()
    spec = executor.validate(job, template, params)
    raw = job if template is None else executor.templates[template]
    request = encode_request(raw, params, spec, executor.templates, request_id)
    await executor.reserve_slot()
    return _record(executor, store, spec, request, name, request_id, extra or {})


def stage_nowait(
    executor: Executor, store: Store, job: Any, *, name: str | None, request_id: RequestId
) -> StagedJob:
    """:func:`stage` for a plain submit (a job, no template or params) that needs no waiting,
    without a coroutine: the hot path of ``serve --state``.

    ``trio.WouldBlock`` when it would wait (a full queue) or the store is failing; that and a
    refusal (``CommandError``) come before anything is done, so :func:`stage` can take over.
    """
    if store.failure or not executor.has_room():
        raise trio.WouldBlock
    spec = executor.validate(job, None, None)  # not accepting: reserve_slot_nowait refuses
    request = encode_request(job, None, spec, executor.templates, request_id)
    executor.reserve_slot_nowait()
    return _record(executor, store, spec, request, name, request_id, {})


def _record(
    executor: Executor,
    store: Store,
    spec: JobSpec,
    request: bytes,
    name: str | None,
    request_id: RequestId,
    extra: dict[str, Any],
) -> StagedJob:
    """Give a validated submit holding a slot its id, and add its record to the open batch."""
    job_id = executor.table.reserve_id()
    job_name = name if name is not None else spec.name
    accepted = executor.table.accepted_event(job_id, request_id, extra)
    try:
        gen = store.add_job(job_id, job_name, request, accepted)
    except StoreFailed:
        executor.release_slot()
        raise
    return StagedJob(job_id, spec, name, request_id, extra, gen)


def stage_value(
    executor: Executor,
    store: Store,
    job: Any,
    value: Any,
    *,
    name: str | None,
    request_id: RequestId,
) -> tuple[Job, int] | None:
    """A bare ``value`` job (``value``: what ``value_job`` made of ``job``) that a worker would
    start now (``Executor.takes_values_now``), completed in one step, as without ``--state``:
    its final row and its three events join the open batch; its record, returned, is added to
    the table once that batch is committed (:func:`complete_values`). No queue slot is held:
    the job never waits for a worker. Returns it with its output's encoded size; None (nothing
    done): its output cannot be encoded.
    """
    try:
        output = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None
    job_id = executor.table.reserve_id()
    now = time.time()
    record = JobTable.completed_value(job_id, value, name=name, request_id=request_id, now=now)
    lines = numbered_completed_lines(job_id, now, output, request_id)
    request = _value_request(job, value, output, request_id)
    store.add_completed(job_id, name, request, output.decode(), lines)
    return record, len(output)


def _value_request(job: Any, value: Any, output: bytes, request_id: RequestId) -> str:
    """:func:`encode_request` of a bare value job (no templates, no params), as text: from
    ``output`` when the checked value is the job's own (``value_job`` returns it unchanged
    unless it substituted something), which is the same bytes as encoding the request."""
    if value is not job["value"]:
        body: dict[str, Any] = {"job": job, "params": {}}
        if request_id is not None:
            body["id"] = request_id
        return orjson.dumps(body).decode()
    end = b"}" if request_id is None else b',"id":' + orjson.dumps(request_id) + b"}"
    return b"".join((b'{"job":{"value":', output, b'},"params":{}', end)).decode()


def complete_values(store: Store, table: JobTable, staged: ValueBatch) -> list[Job]:
    """Add the records of value jobs staged in one batch (:func:`stage_value`, or a run of
    them), once that batch is decided: their events were written after its commit. Returns
    those refused (the commit failed: nothing of them was written)."""
    if store.all_admitted(staged.gen):  # the common case: no question per job
        table.add_completed_records(staged.ids, staged.jobs, staged.sizes)
        return []
    refused = []
    for job, size in zip(staged.jobs, staged.sizes, strict=True):
        if store.admitted(job.id, staged.gen):
            table.add_completed(job, size)
        else:
            refused.append(job)
    return refused


async def settle(
    executor: Executor, store: Store, staged: Sequence[StagedJob]
) -> list[Job | StoreFailed]:
    """Accept staged jobs, in order, once their records are committed: one wait for all.

    Commits are sequential, so the last one durable means all are. A job whose record could not
    be written is refused (``StoreFailed``): the store withdrew it, with its ``accepted``. A
    job staged before a shutdown began is still accepted, as it is on disk, and cancelled at
    once: its ``finished`` follows.
    """
    with contextlib.suppress(StoreFailed):  # the committed ones are accepted, others refused
        await store.wait_admitted(staged[-1].gen)
    return settle_now(executor, store, staged)


def settle_now(
    executor: Executor, store: Store, staged: Sequence[StagedJob]
) -> list[Job | StoreFailed]:
    """:func:`settle` without the wait: a job not yet committed is refused."""
    return [accept_staged(executor, store, item) for item in staged]


def accept_staged(executor: Executor, store: Store, item: StagedJob) -> Job | StoreFailed:
    if not store.admitted(item.job_id, item.gen):
        executor.release_slot()
        return StoreFailed(f"job not accepted: {store.failure}")
    return executor.accept_reserved(
        item.spec,
        job_id=item.job_id,
        name=item.name,
        request_id=item.request_id,
        extra=item.extra,
    )


async def submit_durably(
    executor: Executor,
    store: Store,
    job: Any,
    *,
    template: str | None,
    params: Mapping[str, Any] | None,
    name: str | None,
    request_id: RequestId,
    extra: dict[str, Any],
) -> Job:
    """One submit, staged and settled on its own (``Executor.submit`` with a store)."""
    staged = await stage(
        executor,
        store,
        job,
        template=template,
        params=params,
        name=name,
        request_id=request_id,
        extra=extra,
    )
    with trio.CancelScope(shield=True):  # a recorded job must end accepted (or refused)
        (outcome,) = await settle(executor, store, [staged])
    if isinstance(outcome, StoreFailed):
        raise outcome
    return outcome


def encode_request(
    raw: Any,
    params: Mapping[str, Any] | None,
    spec: JobSpec,
    templates: Mapping[str, Any],
    request_id: RequestId = None,
) -> bytes:
    """The stored form of a submit: enough to validate the same job again after a restart,
    and the submit's request ``id``, which its ``recovered`` carries.

    Why not the spec itself: re-validating the raw JSON keeps the stored form independent of the
    spec classes (new step kinds need no codec), at the cost of keeping the templates the job
    used, so that a template redefined later cannot change a job already accepted.
    """
    body: dict[str, Any] = {"job": raw, "params": dict(params or {})}
    if request_id is not None:
        body["id"] = request_id
    try:
        data = orjson.dumps(body)
        if b'"use"' in data:  # cheap pre-check: only then walk the spec for the templates used
            used = sorted(_templates_used(spec))
            body["templates"] = {name: templates[name] for name in used if name in templates}
            data = orjson.dumps(body)
    except TypeError as exc:  # only an embedding program can pass non-JSON values
        raise InvalidJob("", f"the job cannot be recorded in the state file: {exc}") from None
    return data


def _templates_used(node: object) -> set[str]:
    """Names of every template a validated spec expanded, at any depth (generic over attrs)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Use):
            found.add(item.template)
        kind = type(item)
        if attrs.has(kind):  # a TypeGuard: ``kind`` is an attrs class below
            stack.extend(getattr(item, f.name) for f in attrs.fields(kind))
        elif isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(v for v in item.values() if attrs.has(type(v)))
    return found
