"""The nouns a node works with: a claim on a job, an outcome to write, and how ids look."""

from __future__ import annotations

from typing import Any

import orjson
from attrs import frozen

from .._errors import UnknownJob
from ..wire._events import Event, RequestId

__all__ = ["Claim", "Outcome", "job_id", "job_number", "tagged"]


@frozen
class Claim:
    """This node holds job ``number`` for attempt ``attempt`` (the fencing token)."""

    number: int
    submitter: int  # the node whose driver gets the job's events
    attempt: int


@frozen
class Outcome:
    """A claimed job's end, waiting to be written with its ``finished`` event."""

    claim: Claim
    state: str
    elapsed: float
    result: bytes  # the output (succeeded) or the error, as JSON
    event: dict[str, Any]


def job_id(number: int) -> str:
    """The wire id of job ``number``: ``j12``."""
    return f"j{number}"


def job_number(wire_id: str) -> int:
    """The number in a wire id; ``UnknownJob`` for anything that is not one of ours."""
    digits = wire_id[1:]
    if not wire_id.startswith("j") or not digits.isdigit() or len(digits) > 18:
        raise UnknownJob(f"unknown job {wire_id!r}")
    return int(digits)


def tagged(event: Event, request: bytes | None) -> Event:
    """``event`` (one of a job's) with the ``id`` its submit had, read from the stored request:
    for the events a node writes itself (a rescue's, a queued job's cancel), as the executor
    tags the events of the jobs it runs."""
    request_id = _submit_id(request)
    if request_id is not None:
        event["id"] = request_id
    return event


def _submit_id(request: bytes | None) -> RequestId:
    if request is None:
        return None
    try:
        stored = orjson.loads(request)
    except orjson.JSONDecodeError:
        return None  # its claim reports the damage; an event without its id is no loss
    value = stored.get("id") if isinstance(stored, dict) else None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None
