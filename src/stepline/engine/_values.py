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
from typing import TYPE_CHECKING, Any, Final

import orjson
import trio

from ..spec._validate import NOT_A_VALUE, value_job
from ..wire._events import RequestId, completed_run_lines
from ..wire._plain import PlainSubmit
from ._jobs import Job, JobState

if TYPE_CHECKING:
    from ._jobs import JobTable

__all__ = ["RUN_BYTES", "ValueBatch", "ValueRun"]

RUN_BYTES: Final = 64 << 10
"""A run completes what it holds once their encoded outputs reach this many bytes."""

_SUCCEEDED: Final = JobState.SUCCEEDED
_JOB_ID: Final = "j%d"  # the table's ids (JobTable.reserve_id)
_REQUEST_ID: Final = itemgetter(2)  # a PlainSubmit's request_id


class ValueBatch:
    """The value jobs a run has taken, in input order, and the records completing them makes.

    What a run completed in memory (:class:`ValueRun`) and a run staged with ``--state``
    (``store/_values.py``) share: each decides when it may take a job and what closing does;
    this keeps the jobs and makes their records the one way both need.
    """

    __slots__ = ("outputs", "size", "submits", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []  # checked by value_job
        self.outputs: list[bytes] = []  # each value encoded: its `finished`'s output
        self.submits: list[PlainSubmit] = []  # for the name and the request id
        self.size = 0  # the outputs' bytes

    def keep(self, value: object, submit: PlainSubmit) -> bool:
        """Keep ``value`` (as ``value_job`` returned it for ``submit``); False, with nothing
        kept, when it does not encode (not from JSON input: the general path repairs it)."""
        try:
            output = orjson.dumps(value)
        except orjson.JSONEncodeError:
            return False
        self.values.append(value)
        self.outputs.append(output)
        self.submits.append(submit)
        self.size += len(output)
        return True

    def records(self, table: JobTable) -> tuple[float, list[str], list[Job]]:
        """The kept jobs' records, succeeded now: ids reserved as a block, one clock reading
        (the jobs arrived in one read). Returns (the wall time, their ids, the records)."""
        now = time.time()
        clock = trio.current_time()
        first = table.reserve_ids(len(self.values))
        job_ids = list(map(_JOB_ID.__mod__, range(first, first + len(self.values))))
        jobs: list[Job] = []
        for job_id, value, submit in zip(job_ids, self.values, self.submits, strict=True):
            # Job(id, spec, name, state, extra, request_id, value), positionally: keyword
            # arguments cost a fifth of making the record.
            job = Job(job_id, None, submit[1], _SUCCEEDED, None, submit[2], value)
            job.output = value
            job.started_at = job.finished_at = clock
            job.created = job.started = job.ended = now
            jobs.append(job)
        return now, job_ids, jobs

    def request_ids(self) -> list[RequestId]:
        return list(map(_REQUEST_ID, self.submits))

    def clear(self) -> None:
        """Forget the kept jobs (new lists: the closed run's may still be referenced)."""
        self.values, self.outputs, self.submits, self.size = [], [], [], 0


class ValueRun:
    """Value jobs taken in order by :meth:`add`, completed together by :meth:`close`.

    One per reader (``Executor.value_run``), used again run after run; its owner closes it
    before every ``await`` and every other command, so it holds jobs only while nothing else
    can run. ``lane_open`` says whether a bare value job submitted now would complete at once;
    it is asked when the run takes its first job, and holds for the rest (see above).
    """

    __slots__ = ("_batch", "_lane_open", "_table")

    def __init__(self, table: JobTable, lane_open: Callable[[], bool]) -> None:
        self._table = table
        self._lane_open = lane_open
        self._batch = ValueBatch()

    def add(self, submit: PlainSubmit) -> bool:
        """Take ``submit`` if its job is a bare value that ``value_job`` passes; False, with
        nothing done, for any other (the caller closes the run and submits it the general way,
        which says why it is refused, defers it or queues it), and for any while a value job
        would not complete at once now."""
        value = value_job(submit[0])
        batch = self._batch
        if value is NOT_A_VALUE or (not batch.values and not self._lane_open()):
            return False
        if not batch.keep(value, submit):
            return False
        if batch.size >= RUN_BYTES:
            self.close()
        return True

    def close(self) -> None:
        """Complete the jobs taken so far, as ``complete_value`` completes each, in order:
        ids taken as a block, one clock reading, their lines joined and written at once,
        retention told once. The run may take more jobs afterwards."""
        batch = self._batch
        if not batch.values:
            return
        now, job_ids, jobs = batch.records(self._table)
        lines = completed_run_lines(now, job_ids, batch.outputs, batch.request_ids())
        self._table.add_completed_run(job_ids, jobs, list(map(len, batch.outputs)), lines)
        batch.clear()
