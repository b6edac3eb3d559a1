"""Runs of bare value jobs, read together and completed at once together.

A ``{"value": v}`` job that a worker would start at once completes in one transition
(``JobTable.complete_value``). The reader gets stdin in chunks of up to 64 KiB, about 1,600 such
submits, and most of what each one cost was the same work done once per job: the lane's
conditions asked, an id taken, two clocks read, three lines joined and appended to the outbox,
retention told, each through its own frames (NOTES.md, Performance, Session 8). A
:class:`ValueRun` takes consecutive value jobs of one chunk and does that work once for all of
them.

Why it answers exactly as one job at a time would: the lane's conditions (no job queued, a
worker free, nothing that needs each event as a dict, the executor running) cannot change
while value jobs complete at once, since completing one queues nothing and starts nothing, so
asking once when the run opens is asking before each. Each value is still checked by
``value_job`` as it is added, and one that is not a plain value (refused, deferred, or not a
value job at all) is not taken: the caller closes the run, which completes what it holds, and
only then submits that one the general way, so the order of ids and events is the input's. The
run holds its jobs only while nothing else can run: its owner closes it before any ``await``
and before any other command. One clock reading serves the run (its jobs arrived in one read).

The run closes itself once its outputs reach :data:`RUN_BYTES`, so that the jobs between two
checks of the outbox's congestion add at most that much beyond its mark (with at most one
job's lines over it), as a reader checking before each command would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Final

import orjson
import trio

from ..spec._validate import NOT_A_VALUE, value_job
from ..wire._events import RequestId, completed_run_lines
from ..wire._plain import PlainSubmit
from ._jobs import Job, JobState

if TYPE_CHECKING:
    from ._jobs import JobTable

__all__ = ["RUN_BYTES", "ValueRun"]

RUN_BYTES: Final = 64 << 10
"""A run completes what it holds once their encoded outputs reach this many bytes."""

_SUCCEEDED: Final = JobState.SUCCEEDED
_JOB_ID: Final = "j%d"  # the table's ids (JobTable.reserve_id)
_REQUEST_ID: Final = itemgetter(2)  # a PlainSubmit's request_id


class ValueRun:
    """Value jobs taken in order by :meth:`add`, completed together by :meth:`close`.

    One per reader (``Executor.value_run``), used again run after run; its owner closes it
    before every ``await`` and every other command, so it holds jobs only while nothing else
    can run. ``lane_open`` says whether a bare value job submitted now would complete at once;
    it is asked when the run takes its first job, and holds for the rest (see above).
    """

    __slots__ = ("_lane_open", "_outputs", "_size", "_submits", "_table", "_values")

    def __init__(self, table: JobTable, lane_open: Callable[[], bool]) -> None:
        self._table = table
        self._lane_open = lane_open
        self._values: list[object] = []  # checked by value_job
        self._outputs: list[bytes] = []  # each value encoded: its `finished`'s output
        self._submits: list[PlainSubmit] = []  # for the name and the request id
        self._size = 0

    def add(self, submit: PlainSubmit) -> bool:
        """Take ``submit`` if its job is a bare value that ``value_job`` passes; False, with
        nothing done, for any other (the caller closes the run and submits it the general way,
        which says why it is refused, defers it or queues it), and for any while a value job
        would not complete at once now."""
        value = value_job(submit[0])
        if value is NOT_A_VALUE or (not self._values and not self._lane_open()):
            return False
        try:
            output = orjson.dumps(value)
        except orjson.JSONEncodeError:  # not from JSON input: complete_value repairs it alone
            return False
        self._values.append(value)
        self._outputs.append(output)
        self._submits.append(submit)
        self._size += len(output)
        if self._size >= RUN_BYTES:
            self.close()
        return True

    def close(self) -> None:
        """Complete the jobs taken so far, as ``complete_value`` completes each, in order:
        ids taken as a block, one clock reading, their lines joined and written at once,
        retention told once. The run may take more jobs afterwards."""
        values, outputs, submits = self._values, self._outputs, self._submits
        count = len(values)
        if not count:
            return
        table = self._table
        now = time.time()
        clock = trio.current_time()
        first = table.reserve_ids(count)
        job_ids = list(map(_JOB_ID.__mod__, range(first, first + count)))
        request_ids: list[RequestId] = list(map(_REQUEST_ID, submits))
        jobs: list[Job] = []
        for job_id, value, submit in zip(job_ids, values, submits, strict=True):
            # Job(id, spec, name, state, extra, request_id, value), positionally: keyword
            # arguments cost a fifth of making the record.
            job = Job(job_id, None, submit[1], _SUCCEEDED, None, submit[2], value)
            job.output = value
            job.started_at = job.finished_at = clock
            job.created = job.started = job.ended = now
            jobs.append(job)
        lines = completed_run_lines(now, job_ids, outputs, request_ids)
        table.add_completed_run(job_ids, jobs, list(map(len, outputs)), lines)
        self._values, self._outputs, self._submits, self._size = [], [], [], 0
