"""Events: what stepline tells the world, as plain dicts ready for the JSON encoder.

Events are built by the small constructors below and nowhere else, so the field names of the
protocol live in one place. They are dicts rather than attrs instances on purpose: the writer
encodes roughly three events per job with orjson, and a dict is the one shape orjson encodes
without a conversion step (building an attrs instance and converting it costs about as much as
the encoding itself: NOTES.md, Performance).

``EmitFn`` is the sink every producer writes into. It is synchronous by design: a state change
and the event announcing it happen in the same uninterrupted stretch of code, so no other task
can observe one without the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import orjson

Event: TypeAlias = dict[str, Any]
EmitFn: TypeAlias = Callable[[Event], None]
EmitLinesFn: TypeAlias = Callable[[bytes, int], None]
"""Takes ``count`` events already encoded as JSON lines (``StreamOutbox.emit_lines``)."""
RequestId: TypeAlias = str | int | None

__all__ = [
    "EmitFn",
    "EmitLinesFn",
    "Event",
    "RequestId",
    "completed_lines",
    "completed_run_lines",
    "error",
    "event",
    "numbered_completed_lines",
    "numbered_completed_run_lines",
    "reply",
]


def event(kind: str, /, **fields: Any) -> Event:
    """An event stamped with the current Unix time."""
    return {"event": kind, "ts": time.time(), **fields}


def reply(kind: str, request_id: RequestId, /, **fields: Any) -> Event:
    """An event answering a command; echoes the command's ``id`` when it had one."""
    ev = event(kind, **fields)
    if request_id is not None:
        ev["id"] = request_id
    return ev


def error(code: str, message: str, request_id: RequestId = None) -> Event:
    """The protocol's ``error`` event."""
    return reply("error", request_id, code=code, message=message)


_ACCEPTED: Final = b'{"event":"accepted","ts":'
_STARTED: Final = b'{"event":"started","ts":'
_FINISHED: Final = b'{"event":"finished","ts":'
_SUCCEEDED: Final = b'","state":"succeeded","elapsed":0.0,"output":'


def completed_lines(job_id: str, ts: float, output: bytes, request_id: RequestId) -> bytes:
    """The ``accepted``, ``started`` and ``finished`` lines of a job that succeeded at once at
    ``ts`` with ``output`` (already JSON: ``orjson.dumps``), and no ``extra`` fields: byte for
    byte what encoding their three dicts gives.

    Joined from pieces, because building three dicts and encoding each was a tenth of a trivial
    job, and every ``dumps`` result costs a 4 KiB allocation (NOTES.md, Performance); a join is
    also about half the cost of ``%`` formatting the same pieces.
    ``job_id`` must need no JSON escaping (the job table's ids, ``j<n>``, do not).
    """
    job = orjson.dumps(ts) + b',"job":"' + job_id.encode()  # what follows "ts": in all three
    if request_id is None:
        end, last = b'"}\n', b"}\n"
    else:
        last = b',"id":' + orjson.dumps(request_id) + b"}\n"
        end = b'"' + last
    pieces = (_ACCEPTED, job, end, _STARTED, job, end, _FINISHED, job, _SUCCEEDED, output, last)
    return b"".join(pieces)


def completed_run_lines(
    ts: float, job_ids: list[str], outputs: list[bytes], request_ids: list[RequestId]
) -> bytes:
    """:func:`completed_lines` of a run of jobs that all succeeded at once at ``ts`` (the
    ``i``-th with ``job_ids[i]``, ``outputs[i]``, ``request_ids[i]``), joined: byte for byte the
    concatenation of their :func:`completed_lines`. The pieces every line shares up to its job
    id are made once, and the whole run is one join (``engine/_values.py``).
    """
    head = orjson.dumps(ts) + b',"job":"'
    accepted, started, finished = _ACCEPTED + head, _STARTED + head, _FINISHED + head
    pieces: list[bytes] = []
    for job_id, output, request_id in zip(job_ids, outputs, request_ids, strict=True):
        job = job_id.encode()
        if request_id is None:
            end, last = b'"}\n', b"}\n"
        else:
            last = b',"id":' + orjson.dumps(request_id) + b"}\n"
            end = b'"' + last
        pieces += (accepted, job, end, started, job, end, finished, job, _SUCCEEDED, output, last)
    return b"".join(pieces)


def numbered_completed_lines(job_id: str, ts: float, output: bytes, request_id: RequestId) -> bytes:
    """:func:`completed_lines` as a ``%`` format that takes the three events' ``seq`` numbers
    (``--state``'s event log numbers them only when their commit is made): each line ends in
    ``,"seq":%d}``, as a ``seq`` added last to each event's dict encodes, and every ``%`` of
    the output and the request id is doubled.

    ``numbered_completed_lines(...) % (n, n + 1, n + 2)`` is the lines the event log commits.
    """
    job = orjson.dumps(ts) + b',"job":"' + job_id.encode()
    if request_id is None:
        end, last = b'","seq":%d}\n', b',"seq":%d}\n'
    else:
        last = b',"id":' + orjson.dumps(request_id).replace(b"%", b"%%") + b',"seq":%d}\n'
        end = b'"' + last
    output = output.replace(b"%", b"%%")
    pieces = (_ACCEPTED, job, end, _STARTED, job, end, _FINISHED, job, _SUCCEEDED, output, last)
    return b"".join(pieces)


def numbered_completed_run_lines(
    ts: float, job_ids: list[str], outputs: list[bytes], request_ids: list[RequestId]
) -> bytes:
    """:func:`numbered_completed_lines` of a run of jobs that all succeeded at once at ``ts``,
    joined: one ``%`` format taking the run's ``3 * len(job_ids)`` ``seq`` numbers in order
    (``--state``'s value runs, ``store/_values.py``). The pieces every line shares up to its
    job id are made once, as :func:`completed_run_lines` makes them.
    """
    head = orjson.dumps(ts) + b',"job":"'
    accepted, started, finished = _ACCEPTED + head, _STARTED + head, _FINISHED + head
    pieces: list[bytes] = []
    for job_id, output, request_id in zip(job_ids, outputs, request_ids, strict=True):
        job = job_id.encode()
        if request_id is None:
            end, last = b'","seq":%d}\n', b',"seq":%d}\n'
        else:
            last = b',"id":' + orjson.dumps(request_id).replace(b"%", b"%%") + b',"seq":%d}\n'
            end = b'"' + last
        output = output.replace(b"%", b"%%")
        pieces += (accepted, job, end, started, job, end, finished, job, _SUCCEEDED, output, last)
    return b"".join(pieces)
