"""A finished job as Python code sees it: its output, or a :class:`JobFailed` to catch.

Every Python API of stepline (the in-process executor and both subprocess clients) ends a job the
same way: from its ``finished`` event. Turning that one event into a return value or an exception
in one place keeps the three APIs interchangeable: code written against one catches the same
exception, with the same fields, from the others.
"""

from __future__ import annotations

from typing import Any

from .._errors import SteplineError
from ..engine._jobs import JobState
from ..wire._events import Event

__all__ = ["JobFailed", "result_of"]


class JobFailed(SteplineError):
    """A job ended in a state other than ``succeeded``.

    ``state`` is the final :class:`~stepline.JobState` (``FAILED``, ``CANCELLED`` or
    ``TIMED_OUT``); ``error`` is the protocol's error object, ``{type, message, step, name?,
    ...}``, as the ``finished`` event carried it; ``job`` is the job id and ``elapsed`` the
    seconds it ran.
    """

    code = "job_failed"

    def __init__(
        self, job: str, state: JobState, error: dict[str, Any], elapsed: float = 0.0
    ) -> None:
        super().__init__(_describe(job, state, error))
        self.job = job
        self.state = state
        self.error = error
        self.elapsed = elapsed


def _describe(job: str, state: JobState, error: dict[str, Any]) -> str:
    where = f" at {error['step']}" if error.get("step") else ""
    kind = error.get("type", "error")
    return f"job {job} {state.value}: {kind}{where}: {error.get('message', '')}"


def result_of(finished: Event) -> Any:
    """The output of a ``finished`` event, or :class:`JobFailed` raised from it."""
    state = JobState(finished["state"])
    if state is JobState.SUCCEEDED:
        return finished.get("output")
    error = finished.get("error") or {"type": state.value, "message": state.value, "step": ""}
    raise JobFailed(finished["job"], state, error, finished.get("elapsed", 0.0))
