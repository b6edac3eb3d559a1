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
from typing import Any, TypeAlias

Event: TypeAlias = dict[str, Any]
EmitFn: TypeAlias = Callable[[Event], None]
RequestId: TypeAlias = str | int | None

__all__ = ["EmitFn", "Event", "RequestId", "error", "event", "reply"]


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
