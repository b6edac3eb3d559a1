"""A finished job as Python code sees it: its output, or a :class:`JobFailed` to catch.

Every Python API of stepline (the in-process executor and both subprocess clients) ends a job the
same way: from its ``finished`` event. Turning that one event into a return value or an exception
in one place keeps the three APIs interchangeable: code written against one catches the same
exception, with the same fields, from the others.
"""

from __future__ import annotations

from typing import Any

from .._errors import JobFailed
from ..engine._jobs import JobState
from ..wire._events import Event

__all__ = ["JobFailed", "result_of"]


def result_of(finished: Event) -> Any:
    """The output of a ``finished`` event, or :class:`JobFailed` raised from it."""
    state = JobState(finished["state"])
    if state is JobState.SUCCEEDED:
        return finished.get("output")
    error = finished.get("error") or {"type": state.value, "message": state.value, "step": ""}
    raise JobFailed(finished["job"], state, error, finished.get("elapsed", 0.0))
