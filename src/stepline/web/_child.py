"""The front's own process: it speaks HTTP, fans the events out, and forwards the rest.

Started by :class:`~stepline.web._front.HttpFront` with the listening socket (bound by the
executor's process before ``ready``) and one end of a socket pair (:mod:`._link`). Here, on
its own core and its own GIL, runs what HTTP costs per byte and per connection: parsing
(h11, :mod:`._server`), every ``GET /events`` stream with its copy of the event log, the
writes to every client, and the decoding of ``POST /jobs``, whose submits go to the executor's
process as protocol lines, in batches (:mod:`._submits`). A request for anything else is read
whole (its body up to one byte past the limit, so the executor's process still refuses an
oversized body itself) and forwarded over the link; its answer comes back whole and is
written in one ``send``. So the executor's process spends on a submit about what a stdin line
costs it, on another request only what its handler does, and on an event one more line into
a buffer, however many streams watch.

    python -m stepline.web._child --listen-fd N --link-fd M --max-body BYTES

The token, if any, comes in ``STEPLINE_HTTP_TOKEN`` (an environment is not shown to other
users the way a command line is). The process ends when the executor's process closes the
link or says the events have ended (its streams end, open requests get a few seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
from typing import Any, Final

import orjson
import trio

from ._app import build_events_app
from ._errors import error_response
from ._events import EventLog
from ._link import (
    ADMITTED,
    ANSWER,
    CLOSED,
    EVENTS,
    GAP,
    REQUEST,
    FrameReader,
    LinkWriter,
    pack_message,
    unpack_message,
)
from ._metrics import EventMetrics
from ._server import serve_asgi
from ._submits import Submits, read_limited

__all__ = ["Forwarder", "main"]

GRACE: Final = 2.0  # seconds open requests get once the events have ended
# Below the executor's process when the cores are all busy: the jobs first, as in the loop
# (web/_share.py). 10 steps of nice give a process about a tenth of a contended core.
NICE: Final = 5
_GAP: Final = struct.Struct("!Q")


class Forwarder:
    """The ASGI application for every request but the event streams: over the link and back."""

    def __init__(self, writer: LinkWriter, max_body: int, metrics: EventMetrics) -> None:
        self._writer = writer
        self._max_body = max_body
        self._metrics = metrics
        self._next = 0
        self._waiting: dict[int, trio.Event] = {}
        self._answers: dict[int, tuple[int, list[list[str]], bytes]] = {}
        self.broken = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await read_limited(receive, self._max_body)
        if self.broken:
            status, headers, answer = _unavailable()
        else:
            status, headers, answer = await self._exchange(scope, body)
            if status == 200 and scope["path"] == "/metrics":
                headers, answer = self._with_event_metrics(headers, answer)
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": answer})

    def _with_event_metrics(
        self, headers: list[list[str]], answer: bytes
    ) -> tuple[list[list[str]], bytes]:
        """The executor's metrics and this process's (events, durations) in one answer."""
        ours = self._metrics.render()
        length = next((int(v) for k, v in headers if k == "content-length"), len(answer))
        headers = [[k, v] for k, v in headers if k != "content-length"]
        headers.append(["content-length", str(length + len(ours))])
        return headers, answer + ours

    async def _exchange(
        self, scope: dict[str, Any], body: bytes
    ) -> tuple[int, list[list[str]], bytes]:
        number = self._next
        self._next += 1
        target = scope["raw_path"] + (
            b"?" + scope["query_string"] if scope["query_string"] else b""
        )
        head = {
            "method": scope["method"],
            "target": target.decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "http_version": scope["http_version"],
            "client": scope["client"],
            "server": scope["server"],
        }
        arrived = self._waiting[number] = trio.Event()
        try:
            await self._writer.send(REQUEST, pack_message(number, head, body))
            await arrived.wait()
            return self._answers.pop(number)
        finally:
            self._waiting.pop(number, None)
            self._answers.pop(number, None)

    def answered(self, payload: bytes) -> None:
        number, head, body = unpack_message(payload)
        arrived = self._waiting.get(number)
        if arrived is not None:  # its client may have gone meanwhile
            self._answers[number] = (head["status"], head["headers"], body)
            arrived.set()

    def break_off(self) -> None:
        """The executor's process is gone: every waiting request is answered 503."""
        self.broken = True
        for number, arrived in list(self._waiting.items()):
            self._answers[number] = _unavailable()
            arrived.set()


def _unavailable() -> tuple[int, list[list[str]], bytes]:
    refusal = error_response("unavailable", "the executor is not answering; try again")
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in refusal.raw_headers]
    return refusal.status_code, headers, bytes(refusal.body)


def router(events: Any, submits: Any, forward: Any) -> Any:
    """``GET /events`` (and ``HEAD``) to the streams here, ``POST /jobs`` (exactly that
    target: a query string may carry the token, which the application checks) to the submits'
    batches, anything else forwarded."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        if method == "POST" and scope["raw_path"] == b"/jobs" and not scope["query_string"]:
            await submits(scope, receive, send)
        elif scope["path"] == "/events" and method in ("GET", "HEAD"):
            await events(scope, receive, send)
        else:
            await forward(scope, receive, send)

    return app


async def follow(
    link: trio.abc.ReceiveStream,
    log: EventLog,
    forwarder: Forwarder,
    submits: Submits,
    stop: trio.Event,
    metrics: EventMetrics,
) -> None:
    """What the executor's process sends: events into the log, answers to their requests."""
    reader = FrameReader(link)
    while (received := await reader.next()) is not None:
        kind, payload = received
        if kind == EVENTS:
            for line in payload.split(b"\n")[:-1]:  # each ends with one; JSON has no raw \n
                event = orjson.loads(line)  # here, not in the executor's process
                job = event.get("job")
                log.append_line(job if isinstance(job, str) else None, line)
                metrics.observe(event)
        elif kind == ADMITTED:
            submits.admitted(payload)
        elif kind == ANSWER:
            forwarder.answered(payload)
        elif kind == GAP:
            log.skip(_GAP.unpack(payload)[0])
        elif kind == CLOSED:
            break
    log.close()
    forwarder.break_off()
    submits.break_off()
    stop.set()


async def serve(listen_fd: int, link_fd: int, max_body: int, token: str | None) -> None:
    listening = socket.socket(fileno=listen_fd)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
    link = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=link_fd)))
    log = EventLog()
    writer = LinkWriter(link)
    metrics = EventMetrics()
    forwarder = Forwarder(writer, max_body, metrics)
    submits = Submits(writer, token, max_body)
    app = router(build_events_app(log, token), submits, forwarder)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow, link, log, forwarder, submits, stop, metrics)
        nursery.start_soon(submits.run)
        await serve_asgi(app, listener, stop=stop, grace=GRACE)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--link-fd", type=int, required=True)
    parser.add_argument("--max-body", type=int, required=True)
    args = parser.parse_args()
    token = os.environ.get("STEPLINE_HTTP_TOKEN") or None
    os.nice(NICE)
    with contextlib.suppress(KeyboardInterrupt):  # ^C reaches the whole group: serve handles it
        trio.run(serve, args.listen_fd, args.link_fd, args.max_body, token)


if __name__ == "__main__":
    main()
