"""``GET /events``: Server-Sent Events of every protocol event, resumable by ``Last-Event-ID``.

Each SSE message is one event: ``id:`` its number in the front's :class:`EventLog`, ``data:`` the
exact JSON line stdout got. A client that reconnects with ``Last-Event-ID: N`` (browsers send it
by themselves) gets every kept event after N, then the live ones. Without it the stream starts
with what comes next, unless ``?after=N`` asks for a replay (``after=0``: everything kept).
When events the client asked for are no longer kept, a comment says where the log now starts.
A comment is sent every :data:`KEEPALIVE` seconds of silence, so proxies keep the connection.

A stream woken by new events waits :data:`GATHER` seconds before it reads them, so it sends one
chunk for everything emitted meanwhile: with many clients and a busy executor, a write per
client per wake-up cost more than the jobs themselves (bench/http_load.py, 200 streams beside a
stdin driver: 34 driver jobs a second gathering for 0.1 s, 667 for 0.5 s, against about 6,000
with no stream). Half a second later is still live to a person watching.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ._errors import ApiError
from ._events import EventLog

__all__ = ["GATHER", "KEEPALIVE", "event_stream"]

KEEPALIVE: Final = 15.0
GATHER: Final = 0.5


def event_stream(request: Request, log: EventLog) -> Response:
    after = _start(request, log)
    job = request.query_params.get("job")
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(
        _messages(log, after, job), media_type="text/event-stream", headers=headers
    )


def _start(request: Request, log: EventLog) -> int:
    given = request.headers.get("last-event-id") or request.query_params.get("after")
    if given is None:
        return log.last_id
    try:
        after = int(given)
    except ValueError:
        raise ApiError("bad_command", f"event id must be an integer, got {given!r}") from None
    if after < 0:
        raise ApiError("bad_command", f"event id must not be negative, got {after}")
    return after


async def _messages(log: EventLog, after: int, job: str | None) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"
    if after + 1 < log.first_id:
        yield f": events {after + 1} to {log.first_id - 1} are no longer kept\n\n".encode()
    while True:
        with trio.move_on_after(KEEPALIVE) as waiting:
            await log.wait_beyond(after)
        if waiting.cancelled_caught:
            yield b": keepalive\n\n"
            continue
        if not log.closed:
            await trio.sleep(GATHER)
        batch = log.since(after)
        if not batch:
            if log.closed:
                return  # the executor has stopped
            after = log.last_id  # an event too big to keep came and went
            continue
        after = batch[-1][0]
        chosen = [
            b"id: %d\ndata: %s\n\n" % (event_id, line.rstrip(b"\n"))
            for event_id, event_job, line in batch
            if job is None or event_job == job
        ]
        if chosen:
            yield b"".join(chosen)
