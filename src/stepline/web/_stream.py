"""``GET /events``: Server-Sent Events of every protocol event, resumable by ``Last-Event-ID``.

Each SSE message is one event: ``id:`` its number in the front's :class:`EventLog`, ``data:`` the
exact JSON line stdout got. A client that reconnects with ``Last-Event-ID: N`` (browsers send it
by themselves) gets every kept event after N, then the live ones. Without it the stream starts
with what comes next, unless ``?after=N`` asks for a replay (``after=0``: everything kept).
When events the client asked for are no longer kept, a comment says where the log now starts.
A comment is sent every :data:`KEEPALIVE` seconds of silence, so proxies keep the connection.

Writes are gathered, and spread in time. A stream writes at most once per :data:`GATHER` seconds,
everything emitted meanwhile in one chunk (frames encoded once by the log, joined), and each
stream writes at its own phase of that period: with many clients and a busy executor, a write
per client per event cost more than the jobs themselves, and clients all woken by the same event
made one long turn of the event loop that every job waited behind (bench/http_load.py, numbers
in NOTES). A chunk holds at most what one :meth:`EventLog.read` returns (bounded in events and
bytes), so a stream's memory stays bounded however far behind its reader is; a reader that falls
behind what the log keeps is told which events it missed, in a comment, and goes on from the
oldest kept one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Final

import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ._errors import ApiError
from ._events import EventLog
from ._share import LoopShare

__all__ = ["GATHER", "KEEPALIVE", "event_stream", "messages"]

KEEPALIVE: Final = 15.0
GATHER: Final = 0.5
_SPREAD: Final = 0.6180339887  # golden ratio: consecutive streams' phases land far apart


def event_stream(
    request: Request, log: EventLog, share: LoopShare, writers: trio.Semaphore | None = None
) -> Response:
    """The stream's answer; with ``writers``, each write holds one of its slots."""
    after = _start(request, log)
    job = request.query_params.get("job")
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    response = _EventStream(
        messages(log, after, job, share=share, phase=_phase(log)),
        media_type="text/event-stream",
        headers=headers,
    )
    response.writers = writers
    return response


class _EventStream(StreamingResponse):
    """Starlette's streaming answer, with two differences. A stream's normal end is its client
    going away (the server's ``send`` raises, ASGI 2.4): not an error, so it does not reach the
    front's handler of unexpected ones. And with ``writers`` set, a write waits for a slot:
    with hundreds of streams behind, every one of them is ready to write at every turn of the
    loop, and a request (which takes a few turns) waited behind all of their writes; with a
    few writing at once, the others wait off the run queue (a slot is held only while its
    write is under way, so a client that reads slowly holds one slot, not the rest)."""

    writers: trio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(ClientDisconnect):
            await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        if self.writers is None:
            await super().stream_response(send)
            return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            async with self.writers:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _phase(log: EventLog) -> float:
    """Where in each :data:`GATHER` period this stream writes (spread over the streams)."""
    log.readers += 1
    return (log.readers * _SPREAD) % 1.0 * GATHER


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


async def messages(
    log: EventLog, after: int, job: str | None, *, share: LoopShare, phase: float = 0.0
) -> AsyncGenerator[bytes, None]:
    """The stream's chunks: events above ``after`` (of ``job`` only, if given), then live ones
    until the log closes. What is kept is sent at once; later writes wait for the stream's
    ``phase`` of the :data:`GATHER` period, and each write waits the front's ``share`` turn."""
    yield b"retry: 1000\n\n"
    while True:
        if after + 1 < log.first_id:
            yield f": events {after + 1} to {log.first_id - 1} are no longer kept\n\n".encode()
            after = log.first_id - 1
        chunk, last = log.read(after, job)
        if last > after:
            behind = last < log.last_id  # the read was cut: more is kept already
            after = last
            if chunk:
                await share.stream_turn()
                yield chunk
            if behind:
                continue  # no gathering while the reader is behind
        elif log.closed:
            return  # the executor has stopped and everything kept was sent
        else:
            with trio.move_on_after(KEEPALIVE) as waiting:
                await log.wait_beyond(after)
            if waiting.cancelled_caught:
                yield b": keepalive\n\n"
                continue
        if not log.closed:
            await trio.sleep_until(_next_turn(phase))


def _next_turn(phase: float) -> float:
    """The next moment at ``phase`` within the :data:`GATHER` period."""
    now = trio.current_time()
    return now + ((phase - now) % GATHER or GATHER)
