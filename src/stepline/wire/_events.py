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
    "error",
    "event",
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


_COMPLETED: Final = (
    b'{"event":"accepted","ts":%b,"job":"%b"%b}\n'
    b'{"event":"started","ts":%b,"job":"%b"%b}\n'
    b'{"event":"finished","ts":%b,"job":"%b","state":"succeeded","elapsed":0.0,"output":%b%b}\n'
)


def completed_lines(job_id: str, ts: float, output: Any, request_id: RequestId) -> bytes:
    """The ``accepted``, ``started`` and ``finished`` lines of a job that succeeded at once at
    ``ts`` (no ``extra`` fields), byte for byte what encoding their three dicts gives.

    Assembled from pieces that orjson encodes (the time, the output, the ``id``), because
    building three dicts and encoding each was a tenth of a trivial job, and every ``dumps``
    result costs a 4 KiB allocation (NOTES.md, Performance). ``job_id`` must need no JSON
    escaping (the job table's ids, ``j<n>``, do not). Raises ``orjson.JSONEncodeError`` for an
    output orjson cannot encode: the caller then emits the events one by one, repaired.
    """
    dumps = orjson.dumps
    t = dumps(ts)
    j = job_id.encode()
    tag = b"" if request_id is None else b',"id":' + dumps(request_id)
    return _COMPLETED % (t, j, tag, t, j, tag, t, j, dumps(output), tag)
