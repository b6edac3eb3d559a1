"""The executor's side of the link to the front's process: events out, requests answered.

Every event stdout gets is added to an outgoing buffer as it is emitted (its line as already
encoded, many lines at once when stdout gets them so: nothing is parsed or made per event
here; the front's process reads the job and the kind of each), and one task writes what has
gathered, together with the answers, in one ``send`` whenever it can. The
buffer is bounded: if the front's process stops reading for so long that
:data:`MAX_PENDING` bytes of events wait, they are dropped and it is told how many, so its
streams report the gap instead of skipping silently.

The forwarded requests are answered by the same ASGI application a server in this process
would run (:func:`~stepline.web._app.build_app`: the token, the front's share of the loop,
the endpoints, the errors), by a fixed set of :data:`HANDLERS` tasks fed through a bounded
channel: no task per request, and a flood of requests waits in the front's process, not here.
The batches of submits (``POST /jobs``) are admitted one after another by one more task
(:class:`~stepline.web._admit.Admission`), so their jobs are admitted in the order the front
sent them.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Final

import trio

from ._link import (
    ADMITTED,
    ANSWER,
    CLOSED,
    EVENTS,
    GAP,
    REQUEST,
    SUBMITS,
    FrameReader,
    frame,
    pack_message,
    unpack_message,
)
from ._server import scope_of
from ._share import LoopShare

__all__ = ["HANDLERS", "MAX_PENDING", "Relay"]

log = logging.getLogger("stepline")

HANDLERS: Final = 32  # requests handled at once
MAX_PENDING: Final = 32 << 20  # bytes of events waiting for the front's process, at most
_QUEUED: Final = 64  # forwarded requests waiting for a handler
_BATCHES: Final = 2  # batches of submits waiting to be admitted (the front sends one at a time)


class Relay:
    """Feeds the link and answers what comes over it; ``app`` and ``admission`` are set before
    :meth:`run`."""

    def __init__(self) -> None:
        self.app: Any = None
        self.admission: Any = None  # the batches of POST /jobs (web/_admit.py)
        self._share = LoopShare()  # the one :meth:`run` is given, which times its tasks
        self._events: list[bytes] = []
        self._event_bytes = 0
        self._event_count = 0  # events in _events
        self._dropped = 0
        self._answers: list[bytes] = []
        self._closing = False
        self._wake = trio.lowlevel.ParkingLot()

    # -- synchronous, from the outbox's tap --------------------------------------------------

    def add(self, lines: bytes, count: int) -> None:
        """``count`` events, as the JSON lines stdout got (each ending with ``\n``)."""
        if self._event_bytes + len(lines) > MAX_PENDING:
            self._dropped += self._event_count + count
            self._events.clear()
            self._event_bytes = self._event_count = 0
            return
        self._events.append(lines)
        self._event_bytes += len(lines)
        self._event_count += count
        if self._wake:
            self._wake.unpark_all()

    def close(self) -> None:
        """No more events: the front's process is told once what is pending has gone."""
        self._closing = True
        self._wake.unpark_all()

    # -- the tasks ---------------------------------------------------------------------------

    async def run(self, link: trio.SocketStream, share: LoopShare) -> None:
        """Until the events are closed and sent (or the front's process has gone). This task
        feeds the link and is not the front's in ``share``: what it sends is every job's
        events, a stdin driver's too, a cost of having the front at all that is paid whether
        anyone calls or not. The tasks that take and answer requests are the front's."""
        self._share = share
        send, receive = trio.open_memory_channel[bytes](_QUEUED)
        send_batch, receive_batch = trio.open_memory_channel[bytes](_BATCHES)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._take, link, send, send_batch)
            for _ in range(HANDLERS):
                nursery.start_soon(self._handle, receive.clone())
            receive.close()
            nursery.start_soon(self._admit, receive_batch)
            try:
                await self._feed(link)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.error("the HTTP front's process has gone: HTTP is no longer served")  # noqa: TRY400 (no traceback: the reason is all there is)
            nursery.cancel_scope.cancel()

    async def _feed(self, link: trio.SocketStream) -> None:
        while True:
            data = self._pending()
            if data:
                await link.send_all(data)
            elif self._closing:
                await link.send_all(frame(CLOSED, b""))
                return
            else:
                await self._wake.park()

    def _pending(self) -> bytes:
        parts = []
        if self._dropped:
            parts.append(frame(GAP, struct.pack("!Q", self._dropped)))
            self._dropped = 0
        if self._events:
            parts.append(frame(EVENTS, b"".join(self._events)))
            self._events.clear()
            self._event_bytes = self._event_count = 0
        parts += self._answers
        self._answers.clear()
        return b"".join(parts)

    async def _take(
        self,
        link: trio.SocketStream,
        requests: trio.MemorySendChannel[bytes],
        batches: trio.MemorySendChannel[bytes],
    ) -> None:
        self._share.enlist(trio.lowlevel.current_task())
        reader = FrameReader(link)
        async with requests, batches:
            while (received := await reader.next()) is not None:
                kind, payload = received
                if kind == REQUEST:
                    await requests.send(payload)
                elif kind == SUBMITS:
                    await batches.send(payload)

    async def _admit(self, batches: trio.MemoryReceiveChannel[bytes]) -> None:
        self._share.enlist(trio.lowlevel.current_task())
        async with batches:
            async for payload in batches:
                number, head, body = unpack_message(payload)
                lines = body.split(b"\n")[:-1]  # each ends with one; JSON has no raw \n
                with self._share.serving():
                    results = await self.admission.admit(lines, head.get("answered", {}))
                answer = pack_message(number, {"results": results}, b"")
                self._answers.append(frame(ADMITTED, answer))
                self._wake.unpark_all()

    async def _handle(self, requests: trio.MemoryReceiveChannel[bytes]) -> None:
        self._share.enlist(trio.lowlevel.current_task())
        async with requests:
            async for payload in requests:
                number, head, body = unpack_message(payload)
                with self._share.serving():
                    status, headers, answer = await self._call(head, body)
                self._answers.append(
                    frame(
                        ANSWER, pack_message(number, {"status": status, "headers": headers}, answer)
                    )
                )
                self._wake.unpark_all()

    async def _call(self, head: dict[str, Any], body: bytes) -> tuple[int, list[list[str]], bytes]:
        """The application's answer to a forwarded request, whole."""
        scope = scope_of(
            head["method"],
            head["target"].encode("latin-1"),
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"]],
            head["http_version"],
            tuple(head["client"]),
            tuple(head["server"]),
        )
        answer = _Answer(body)
        try:
            await self.app(scope, answer.receive, answer.send)
        except Exception as exc:  # the application has answered 500 already, or not at all
            log.debug("failed answering %s", head["target"], exc_info=exc)
        if answer.status is None:
            return 500, [["content-type", "text/plain; charset=utf-8"]], b"Internal Server Error"
        return answer.status, answer.headers, b"".join(answer.body)


class _Answer:
    """ASGI ``receive`` (the forwarded body, then nothing) and ``send`` (collected)."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self.status: int | None = None
        self.headers: list[list[str]] = []
        self.body: list[bytes] = []

    async def receive(self) -> dict[str, Any]:
        if self._body is None:
            await trio.sleep_forever()  # the client's connection is the other process's
        body, self._body = self._body, None
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", ())
            ]
        elif message["type"] == "http.response.body":
            self.body.append(bytes(message.get("body", b"")))
