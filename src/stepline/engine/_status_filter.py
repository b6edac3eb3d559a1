"""What a ``status`` command (or ``GET /jobs``) asks for: which job records, how many, from where.

A module of its own: it is the query over the job table's records, read by the server, the web
API and the client, and holds none of the table's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import frozen

from .._errors import BadCommand, UnknownJob
from ._states import BY_NAME, JobState

if TYPE_CHECKING:
    from ._job_record import Job

__all__ = ["StatusFilter"]


@frozen
class StatusFilter:
    """``status`` filters: ``states`` (any of), ``name``, ``since`` (created at or after, Unix
    seconds), ``limit`` (the most recent that match, most recent first), ``before`` (only jobs
    accepted before this one: a page's cursor, ``GET /jobs?before=``)."""

    states: frozenset[JobState] | None = None
    name: str | None = None
    since: float | None = None
    limit: int | None = None
    before: str | None = None

    def apply(self, jobs: list[Job]) -> list[Job]:
        if self.before is not None:
            cut = next((i for i, job in enumerate(jobs) if job.id == self.before), None)
            if cut is None:
                raise UnknownJob(f"unknown job {self.before!r}")
            jobs = jobs[:cut]
        states, name, since = self.states, self.name, self.since
        picked = [
            job
            for job in jobs
            if (states is None or job.state in states)
            and (name is None or job.name == name)
            and (since is None or (job.created is not None and job.created >= since))
        ]
        if self.limit is None:
            return picked
        return picked[::-1][: self.limit]

    @classmethod
    def of(
        cls,
        state: Any = None,
        name: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> StatusFilter | None:
        """The filter a ``status`` command asks for (None: none); ``state`` is a state's name
        or a list of them, anything else a ``BadCommand``."""
        if state is None and name is None and since is None and limit is None and before is None:
            return None
        return cls(_states(state), name, since, limit, before)


def _states(state: Any) -> frozenset[JobState] | None:
    if state is None:
        return None
    names = [state] if isinstance(state, str) else state
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadCommand("status: 'state' must be a state or a list of states")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        known = ", ".join(BY_NAME)
        raise BadCommand(f"status: unknown state {unknown[0]!r}; expected one of {known}")
    return frozenset(BY_NAME[n] for n in names)
