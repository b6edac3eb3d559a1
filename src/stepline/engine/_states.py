"""The job lifecycle: a job's states and the moves between them.

Job lifecycle::

    QUEUED ──start──▶ RUNNING ──finish──▶ SUCCEEDED | FAILED | CANCELLED | TIMED_OUT
       └───────────────cancel while queued──────────▶ CANCELLED

Only the job table (:mod:`stepline.engine._jobs`) moves a job; any other move is a bug.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["ALLOWED_MOVES", "BY_NAME", "FINAL_STATES", "JobState"]


class JobState(enum.Enum):
    """Where a job is in its life: queued, running, then one of four final states."""

    QUEUED = "queued"  # accepted; waiting in the bounded queue for a worker
    RUNNING = "running"  # a worker is running its steps inside the job's cancel scope
    SUCCEEDED = "succeeded"  # final: the steps finished; ``output`` holds the result
    FAILED = "failed"  # final: a step failed, or stepline hit a bug (type ``internal``)
    CANCELLED = "cancelled"  # final: a ``cancel`` command or a cancelling shutdown
    TIMED_OUT = "timed_out"  # final: the job-level ``timeout`` expired

    # Enum's own __hash__ is Python code hashing the member's name; members are singletons
    # compared by identity, so identity hashing is equivalent, and the table hashes a state on
    # every transition (four times per job).
    __hash__ = object.__hash__


BY_NAME: Final = {state.value: state for state in JobState}
"""Each state by its wire name."""

FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT)

ALLOWED_MOVES: Final[dict[JobState, frozenset[JobState]]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(FINAL_STATES),
}
"""The states each state may move to; final states move nowhere."""
