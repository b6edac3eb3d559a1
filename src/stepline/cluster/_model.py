"""The nouns a node works with: a claim on a job, an outcome to write, and how ids look."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from .._errors import UnknownJob

__all__ = ["Claim", "Outcome", "job_id", "job_number"]


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
