"""A job's output lines for the Python APIs: ``logs`` replies paged through until the job is done.

Every API's job handle has ``output_lines()``, an iterator over the job's lines (``{"n", "ts",
"step", "stream", "line"}``) from the first one kept to the end of the job, streamed or not. It
asks ``logs`` with the ``next`` of the previous reply; an empty page of a job still running
waits :data:`POLL` seconds before asking again. Polling, not the ``output`` events: those exist
only for streamed steps, and a handle's event history is bounded, while the log numbers every
line and says with ``trimmed`` what it no longer has.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["POLL", "logs_fields"]

POLL: Final = 0.2
"""Seconds between ``logs`` requests while a running job has no new line."""


def logs_fields(reply: dict[str, Any]) -> dict[str, Any]:
    """A ``logs`` reply without the event's own fields: ``job``, ``lines``, ``next``,
    ``trimmed``, ``done``."""
    return {k: v for k, v in reply.items() if k not in ("event", "ts", "id")}
