"""Stored rows back into values, checked: a damaged store is refused with a reason, not a crash.

Every backend stores the same things as JSON bytes (a job's request and result, a template, an
object) beside a few scalars, and turns them back with these functions. Each check names the row
and what is wrong with it; the backend wraps the :class:`Corrupt` into
:class:`~stepline.store._model.StoreError`. Nothing is trusted because it was written by us: a
file may have been edited, truncated or written by a buggy version.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from ._model import FINAL, UNFINISHED, StoredJob

__all__ = [
    "Corrupt",
    "decode_cursor",
    "decode_event",
    "decode_event_run",
    "decode_job",
    "decode_json",
    "decode_next_id",
    "decode_template",
    "encode_json",
]


class Corrupt(ValueError):
    """A stored row is not what this format holds."""


def decode_json(data: object, what: str) -> Any:
    """JSON bytes (or text) as a value; :class:`Corrupt` naming ``what`` otherwise."""
    if not isinstance(data, bytes | str):
        raise Corrupt(f"{what} is not JSON text")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Corrupt(f"{what} is not valid JSON ({exc})") from None


def decode_job(
    job_id: object,
    name: object,
    state: object,
    request: object,
    elapsed: object,
    result: object,
) -> StoredJob:
    """One job row; the request is decoded only while the job is unfinished."""
    if not isinstance(job_id, str) or not job_id:
        raise Corrupt(f"a job has the id {job_id!r}")
    if name is not None and not isinstance(name, str):
        raise Corrupt(f"job {job_id} has the name {name!r}")
    if state in UNFINISHED:
        return StoredJob(job_id, name, str(state), request=_request(job_id, request))
    if state not in FINAL:
        raise Corrupt(f"job {job_id} has the unknown state {state!r}")
    if not isinstance(elapsed, int | float) or not math.isfinite(elapsed) or elapsed < 0:
        raise Corrupt(f"job {job_id} has the elapsed time {elapsed!r}")
    value = decode_json(result, f"the result of job {job_id}")
    if state != "succeeded" and not isinstance(value, dict):
        raise Corrupt(f"the error of job {job_id} is not an object")
    return StoredJob(job_id, name, str(state), None, float(elapsed), value)


def _request(job_id: str, data: object) -> dict[str, Any]:
    """A stored submit: ``{"job": ..., "params": {...}, "templates"?: {name: job}, "id"?}``
    (``id``: the submit command's request id, which ``recovered`` carries)."""
    request = decode_json(data, f"the request of job {job_id}")
    if not isinstance(request, dict) or "job" not in request:
        raise Corrupt(f"the request of job {job_id} is not an object with a job")
    if not isinstance(request.get("params", {}), dict):
        raise Corrupt(f"the params of job {job_id} are not an object")
    templates = request.get("templates", {})
    if not isinstance(templates, dict) or not all(isinstance(t, dict) for t in templates.values()):
        raise Corrupt(f"the templates of job {job_id} are not objects")
    request_id = request.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
        raise Corrupt(f"the request id of job {job_id} is {request_id!r}")
    return request


def decode_template(name: object, data: object) -> tuple[str, dict[str, Any]]:
    """One template row: its name and its job (an object)."""
    if not isinstance(name, str):
        raise Corrupt(f"a template has the name {name!r}")
    job = decode_json(data, f"template {name!r}")
    if not isinstance(job, dict):
        raise Corrupt(f"template {name!r} is not an object")
    return name, job


def decode_event(seq: object, data: object) -> tuple[int, bytes]:
    """One entry of the event log: a positive sequence number and one JSON object line."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise Corrupt(f"an event has the sequence number {seq!r}")
    if not isinstance(data, bytes) or not data.endswith(b"\n"):
        raise Corrupt(f"event {seq} is not a JSON line")
    if not isinstance(decode_json(data, f"event {seq}"), dict):
        raise Corrupt(f"event {seq} is not an object")
    return seq, data


def decode_event_run(last: object, data: object, *, after: int) -> list[tuple[int, bytes]]:
    """A row of consecutive events: JSON lines numbered up to ``last``, each after ``after``
    (the last event of the row before, so that no two rows overlap)."""
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise Corrupt(f"an event has the sequence number {last!r}")
    if not isinstance(data, bytes) or not data.endswith(b"\n"):
        raise Corrupt(f"event {last} is not a JSON line")
    lines = [line + b"\n" for line in data[:-1].split(b"\n")]
    first = last - len(lines) + 1
    if first <= after:
        raise Corrupt(f"the {len(lines)} events up to {last} overlap event {after}")
    return [decode_event(first + i, line) for i, line in enumerate(lines)]


def decode_cursor(value: object) -> int:
    """The delivery cursor: every event up to this sequence number was written (0: none)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Corrupt(f"the delivery cursor is {value!r}")
    return value


def decode_next_id(value: object) -> int:
    """The job id counter: the number in the next id, at least 1."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Corrupt(f"the job id counter is {value!r}")
    return value


def encode_json(value: Any) -> bytes:
    """JSON for a job's output or error; like the outbox, repair rather than fail the batch."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, default=str).encode()
