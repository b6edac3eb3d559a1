"""A lean ASGI server for the front: h11 parses HTTP/1.1, trio carries the bytes.

Why not a general server (Hypercorn, measured in NOTES, "HTTP front"): the front shares the
executor's loop and GIL, so every microsecond a request costs is taken from the jobs. This
server does what the front needs and no more: one task per connection, each request handled
in that task (no task per request, no queues between tasks), and a plain answer written in one
``send`` (status line, headers and body together; a general server writes the head and the
body separately). A streaming answer (``GET /events``) gets one more task, started only then,
that watches the socket so a client that goes away ends its stream at once.

What it serves is plain ASGI 3 (``http`` scopes, spec 2.4: a send to a client that has gone
raises :class:`OSError`), so the Starlette application is the same one a general server would
run. HTTP/1.1 keep-alive and pipelining, ``Expect: 100-continue``, ``HEAD`` (the body is
dropped) and chunked or close-delimited streaming come from h11; no HTTP is parsed here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

import h11
import trio

__all__ = ["ClientGone", "scope_of", "serve_asgi"]

log = logging.getLogger("stepline")

ASGIApp = Callable[[dict[str, Any], Any, Any], Any]

RECEIVE: Final = 1 << 16  # bytes read from a socket at once
IDLE: Final = 5.0  # seconds a kept-alive connection may wait for its next request
MAX_HEAD: Final = 1 << 16  # bytes of request line and headers h11 takes before refusing
MAX_SKIP: Final = 1 << 20  # bytes of an unread body read and dropped to keep the connection


class ClientGone(OSError):
    """The client closed its connection while the application was still sending (ASGI 2.4)."""


async def serve_asgi(
    app: ASGIApp,
    listener: trio.SocketListener,
    *,
    stop: trio.Event,
    grace: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listener`` until ``stop`` is set; then take no new connection, let
    open requests finish for ``grace`` seconds (idle connections close at once), and cancel
    what is left."""
    server = _Server(app)
    async with trio.open_nursery() as nursery:
        accepting = trio.CancelScope()
        nursery.start_soon(server.accept, listener, nursery, accepting)
        task_status.started()
        await stop.wait()
        accepting.cancel()
        server.close_idle()
        with trio.move_on_after(grace):
            await server.all_closed()
        nursery.cancel_scope.cancel()


class _Server:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.closing = False
        self.connections: set[_Connection] = set()
        self._empty = trio.Event()

    async def accept(
        self, listener: trio.SocketListener, nursery: trio.Nursery, scope: trio.CancelScope
    ) -> None:
        with scope:
            async with listener:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        connection = _Connection(self, stream)
        self.connections.add(connection)
        try:
            async with stream:
                await connection.run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ClientGone):
            pass  # the client went away; nothing is owed to it
        finally:
            self.connections.discard(connection)
            if self.closing and not self.connections:
                self._empty.set()

    def close_idle(self) -> None:
        self.closing = True
        for connection in list(self.connections):
            connection.close_if_idle()
        if not self.connections:
            self._empty.set()

    async def all_closed(self) -> None:
        await self._empty.wait()


class _Connection:
    """One client connection: its requests one after another, each to the application."""

    def __init__(self, server: _Server, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.idle = trio.CancelScope()
        sockname = stream.socket.getsockname()
        peername = stream.socket.getpeername()
        self.local = (sockname[0], sockname[1])
        self.peer = (peername[0], peername[1])

    def close_if_idle(self) -> None:
        self.idle.cancel()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:  # for a streaming answer's watcher only
            while not self.server.closing:
                request = await self._next_request()
                if request is None:
                    return
                exchange = _Exchange(self, request, nursery)
                await exchange.run()
                if not exchange.complete or self.h11.our_state is not h11.DONE:
                    return  # the answer was cut short: the connection cannot be reused
                if not await self._skip_body():
                    return
                self.h11.start_next_cycle()

    async def _next_request(self) -> h11.Request | None:
        """The next request's head, or ``None`` when the connection should close."""
        with trio.move_on_after(IDLE) as self.idle:
            if self.server.closing:
                self.idle.cancel()
            while True:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc)
                    return None
                if isinstance(event, h11.Request):
                    return event
                if event is h11.NEED_DATA:
                    await self.read()
                    continue
                return None  # ConnectionClosed, or PAUSED after a close
        return None  # idle too long, or the server is closing

    async def _skip_body(self) -> bool:
        """Read what is left of a request's body once it has been answered without it (a
        refusal before the body, a body nobody reads), so the connection can take the next
        request; ``False`` when that would mean reading more than :data:`MAX_SKIP` bytes."""
        skipped = 0
        while self.h11.their_state is h11.SEND_BODY and skipped <= MAX_SKIP:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                return False
            if event is h11.NEED_DATA:
                with trio.move_on_after(IDLE):
                    await self.read()
                    continue
                return False
            if isinstance(event, h11.Data):
                skipped += len(event.data)
            elif not isinstance(event, h11.EndOfMessage):
                return False
        return self.h11.their_state is h11.DONE

    async def read(self) -> None:
        data = await self.stream.receive_some(RECEIVE)
        self.h11.receive_data(data)  # b"" tells h11 the client closed its side

    async def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        """A request h11 cannot parse: ``400`` (or the status h11 names), then close."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"bad request: {exc}".encode()
        head = h11.Response(
            status_code=exc.error_status_hint,
            headers=[
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ],
        )
        data = self.h11.send(head) + self.h11.send(h11.Data(data=body))
        await self.stream.send_all(data + self.h11.send(h11.EndOfMessage()))


class _Exchange:
    """One request and its answer: the ASGI ``receive`` and ``send`` the application calls."""

    def __init__(
        self, connection: _Connection, request: h11.Request, nursery: trio.Nursery
    ) -> None:
        self.connection = connection
        self.h11 = connection.h11
        self.nursery = nursery
        self.head_only = request.method == b"HEAD"
        self.scope = _scope(connection, request)
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.started = False  # the head is on the wire
        self.complete = False  # so is the end of the body
        self.body_done = False  # the request's body was read to its end
        self.gone = False  # the client closed its connection
        self.answering = trio.CancelScope()
        self.watcher: trio.CancelScope | None = None
        self.watched = trio.Event()  # the watcher has returned

    async def run(self) -> None:
        with self.answering:
            try:
                await self.connection.server.app(self.scope, self.receive, self.send)
            except Exception as exc:
                if not self.gone:
                    log.debug("failed answering %s", self.scope["path"], exc_info=exc)
        if self.watcher is not None:
            self.watcher.cancel()
            await self.watched.wait()  # one reader of the socket at a time
        if not self.started and not self.gone:
            await self._answer_failure()  # the application failed, or returned without answering

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.body_done or self.gone:
            await self._wait_gone()
            return {"type": "http.disconnect"}
        if self.h11.they_are_waiting_for_100_continue:
            await self.connection.stream.send_all(
                self.h11.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:  # the client closed before its body was complete
                event = h11.ConnectionClosed()
            if event is h11.NEED_DATA:
                await self.connection.read()
            elif isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            elif isinstance(event, h11.EndOfMessage):
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            else:
                self.gone = True
                return {"type": "http.disconnect"}

    async def _wait_gone(self) -> None:
        """After the body: return once the client has closed (it may never). Data that comes
        meanwhile is a pipelined request, kept by h11 for the next cycle."""
        if self.watcher is not None:  # the watcher is the socket's reader
            await self.watched.wait()
            return
        await self._read_until_gone()

    async def _read_until_gone(self) -> None:
        while not self.gone:
            data = await self.connection.stream.receive_some(RECEIVE)
            if data:
                self.h11.receive_data(data)
            else:
                self.gone = True

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            raise ClientGone("the client has closed the connection")
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
            return
        if kind != "http.response.body" or self.status is None or self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r} here")
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        data = b""
        if not self.started:
            data = self.h11.send(h11.Response(status_code=self.status, headers=self.headers))
            self.started = True
        if body and not self.head_only:
            data += self.h11.send(h11.Data(data=body))
        if not more:
            data += self.h11.send(h11.EndOfMessage())
            self.complete = True
        elif self.watcher is None:
            self.watcher = trio.CancelScope()
            self.nursery.start_soon(self._watch, self.watcher)
        try:
            await self.connection.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.gone = True
            raise ClientGone("the client has closed the connection") from None

    async def _watch(self, watcher: trio.CancelScope) -> None:
        """While a streaming answer is sent: end it as soon as the client closes (``watcher``:
        the scope that stops this watch, kept as ``self.watcher``)."""
        try:
            with watcher:
                try:
                    await self._read_until_gone()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.gone = True
                self.answering.cancel()
        finally:
            self.watched.set()

    async def _answer_failure(self) -> None:
        self.status, self.headers = 500, [(b"content-type", b"text/plain; charset=utf-8")]
        self.headers.append((b"content-length", b"21"))
        self.headers.append((b"connection", b"close"))
        with contextlib.suppress(ClientGone):
            await self.send({"type": "http.response.body", "body": b"Internal Server Error"})


def _scope(connection: _Connection, request: h11.Request) -> dict[str, Any]:
    return scope_of(
        request.method.decode(),
        request.target,
        list(request.headers),
        request.http_version.decode(),
        connection.peer,
        connection.local,
    )


def scope_of(
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    http_version: str,
    client: tuple[str, int],
    server: tuple[str, int],
) -> dict[str, Any]:
    """The ASGI ``http`` scope of a request (also rebuilt from a forwarded one)."""
    raw_path, _, query = target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": http_version,
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": {},
    }
