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

from collections.abc import Callable
from typing import Any

import orjson

from ..engine._executor import Executor
from ..engine._jobs import Job
from ..engine._values import RUN_BYTES, ValueBatch
from ..spec._validate import NOT_A_VALUE, value_job
from ..wire._events import numbered_completed_run_lines
from ..wire._plain import PlainSubmit
from ._store import Store

__all__ = ["StagedValueRun", "Staging"]

Staging = Callable[[list[str], list[Job], list[int], int], None]
"""Where a closed run's records go, to join the table once batch ``gen`` is committed:
(their ids, the records, their outputs' encoded sizes, gen)."""


class StagedValueRun:
    """Value jobs taken in order by :meth:`add`, staged together by :meth:`close`.

    One per reader (``SubmitPipeline.value_run``), used again run after run; its owner closes it
    before every ``await`` and every other command. ``room`` says how many jobs may be staged
    now (0: a value job submitted now would not take the lane, or the staged bound is
    reached); it is asked when the run takes its first job, and holds for the rest of the run
    (see above), less what each close staged.
    """

    __slots__ = ("_ask_room", "_batch", "_executor", "_room", "_staging", "_store")

    def __init__(
        self, executor: Executor, store: Store, staging: Staging, room: Callable[[], int]
    ) -> None:
        self._executor = executor
        self._store = store
        self._staging = staging
        self._ask_room = room
        self._room = 0  # jobs this run may still take (asked at its first)
        self._batch = ValueBatch()

    def add(self, submit: PlainSubmit) -> bool:
        """Take ``submit`` if its job is a bare value that ``value_job`` passes and the lane
        and the staged bound have room; False, with nothing done, for any other (the caller
        closes the run and submits it the general way)."""
        batch = self._batch
        if not batch.values:
            self._room = self._ask_room()
        if len(batch.values) >= self._room:
            return False
        value = value_job(submit[0])
        if value is NOT_A_VALUE or not batch.keep(value, submit):
            return False
        if batch.size >= RUN_BYTES:
            self.close()
        return True

    def close(self) -> None:
        """Stage the jobs taken so far: their rows and events join the open batch, their
        records wait for its commit. The run may take more jobs afterwards."""
        batch = self._batch
        if not batch.values:
            return
        now, job_ids, jobs = batch.records(self._executor.table)
        outputs, submits = batch.outputs, batch.submits
        texts = [output.decode() for output in outputs]
        gen = self._store.add_completed_run(
            job_ids,
            [0 if submit[1] is None else submit[1] for submit in submits],
            _requests(batch.values, texts, submits),
            texts,
            numbered_completed_run_lines(now, job_ids, outputs, batch.request_ids()),
        )
        self._staging(job_ids, jobs, list(map(len, outputs)), gen)
        self._room -= len(jobs)
        batch.clear()


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
