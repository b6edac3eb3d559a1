"""Runs of bare value jobs staged together with ``--state``: one batch entry per run.

Without ``--state`` a run of consecutive ``{"value": v}`` submits of one chunk is completed
together (``engine/_values.py``): ids taken as a block, one clock reading, the lines joined once.
With ``--state`` each such job was staged alone (:func:`~stepline.store._admit.stage_value`):
its id, its clock readings, its ``%`` format of three lines, its request, its row and its entry
in the event log, each through its own frames. :class:`StagedValueRun` does that work once per
run: the rows go into the open batch as one slice, the lines as one ``%`` format that the event
log numbers at commit time (:class:`~stepline.store._eventlog.NumberedRun`), and the records
join the table once that batch is committed (``SubmitPipeline``), as a single job's do.

Why it answers as one job at a time would: the lane's conditions (``Executor.takes_values_now``,
the store writing) cannot change while the run is open, since its owner (the reader) closes it
before every ``await`` and before any other command, and completing value jobs queues and
starts nothing; the store's failure is only decided in its writer task, which runs at an
``await``. Each value is still checked by ``value_job`` as it is added; one that is not taken
makes the caller close the run first, so ids and events keep the input's order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final

import orjson
import trio

from ..engine._executor import Executor
from ..engine._jobs import Job, JobState
from ..engine._values import RUN_BYTES
from ..spec._validate import NOT_A_VALUE, value_job
from ..wire._events import RequestId, numbered_completed_run_lines
from ..wire._plain import PlainSubmit
from ._store import Store

__all__ = ["StagedValueRun", "Staging"]

Staging = Callable[[list[str], list[Job], list[int], int], None]
"""Where a closed run's records go, to join the table once batch ``gen`` is committed:
(their ids, the records, their outputs' encoded sizes, gen)."""

_SUCCEEDED: Final = JobState.SUCCEEDED
_JOB_ID: Final = "j%d"  # the table's ids (JobTable.reserve_id)
_REQUEST_ID: Final = itemgetter(2)  # a PlainSubmit's request_id


class StagedValueRun:
    """Value jobs taken in order by :meth:`add`, staged together by :meth:`close`.

    One per reader (``SubmitPipeline.value_run``), used again run after run; its owner closes it
    before every ``await`` and every other command. ``room`` says how many jobs may be staged
    now (0: a value job submitted now would not take the lane, or the staged bound is
    reached); it is asked when the run takes its first job, and holds for the rest of the run
    (see above), less what each close staged.
    """

    __slots__ = (
        "_ask_room", "_executor", "_outputs", "_room", "_size", "_staging", "_store", "_submits",
        "_values",
    )  # fmt: skip

    def __init__(
        self, executor: Executor, store: Store, staging: Staging, room: Callable[[], int]
    ) -> None:
        self._executor = executor
        self._store = store
        self._staging = staging
        self._ask_room = room
        self._room = 0  # jobs this run may still take (asked at its first)
        self._values: list[Any] = []  # checked by value_job
        self._outputs: list[bytes] = []  # each value encoded: its `finished`'s output
        self._submits: list[PlainSubmit] = []  # for the job, its name and its request id
        self._size = 0

    def add(self, submit: PlainSubmit) -> bool:
        """Take ``submit`` if its job is a bare value that ``value_job`` passes and the lane
        and the staged bound have room; False, with nothing done, for any other (the caller
        closes the run and submits it the general way)."""
        if not self._values:
            self._room = self._ask_room()
        if len(self._values) >= self._room:
            return False
        value = value_job(submit[0])
        if value is NOT_A_VALUE:
            return False
        try:
            output = orjson.dumps(value)
        except orjson.JSONEncodeError:  # not from JSON input: staged the general way
            return False
        self._values.append(value)
        self._outputs.append(output)
        self._submits.append(submit)
        self._size += len(output)
        if self._size >= RUN_BYTES:
            self.close()
        return True

    def close(self) -> None:
        """Stage the jobs taken so far: their rows and events join the open batch, their
        records wait for its commit. The run may take more jobs afterwards."""
        values, outputs, submits = self._values, self._outputs, self._submits
        count = len(values)
        if not count:
            return
        now = time.time()
        clock = trio.current_time()
        first = self._executor.table.reserve_ids(count)
        job_ids = list(map(_JOB_ID.__mod__, range(first, first + count)))
        request_ids: list[RequestId] = list(map(_REQUEST_ID, submits))
        jobs: list[Job] = []
        for job_id, value, submit in zip(job_ids, values, submits, strict=True):
            # Job(id, spec, name, state, extra, request_id, value), positionally, as
            # engine/_values.py makes them (keyword arguments cost a fifth of a record).
            job = Job(job_id, None, submit[1], _SUCCEEDED, None, submit[2], value)
            job.output = value
            job.started_at = job.finished_at = clock
            job.created = job.started = job.ended = now
            jobs.append(job)
        texts = [output.decode() for output in outputs]
        gen = self._store.add_completed_run(
            job_ids,
            [0 if submit[1] is None else submit[1] for submit in submits],
            _requests(values, texts, submits),
            texts,
            numbered_completed_run_lines(now, job_ids, outputs, request_ids),
        )
        self._staging(job_ids, jobs, list(map(len, outputs)), gen)
        self._room -= count
        self._values, self._outputs, self._submits, self._size = [], [], [], 0


def _requests(values: list[Any], outputs: list[str], submits: list[PlainSubmit]) -> list[str]:
    """Each job's stored request (``encode_request``'s form, as text): from its output when the
    checked value is the job's own (``value_job`` returns it unchanged unless it substituted
    something), which is the same text as encoding the request."""
    requests = []
    for value, output, (job, _, request_id) in zip(values, outputs, submits, strict=True):
        if value is not job["value"]:
            body: dict[str, Any] = {"job": job, "params": {}}
            if request_id is not None:
                body["id"] = request_id
            requests.append(orjson.dumps(body).decode())
        elif request_id is None:
            requests.append('{"job":{"value":' + output + '},"params":{}}')
        else:
            rid = orjson.dumps(request_id).decode()
            requests.append('{"job":{"value":' + output + '},"params":{},"id":' + rid + "}")
    return requests
