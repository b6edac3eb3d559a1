"""The front's own ASGI server (h11 on trio): keep-alive, bodies, streams, bad requests, stopping.

The front's endpoints are tested through it elsewhere (httpx, schemathesis, Chromium); these
tests pin what a general server would have given for free and this one must not lose.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from stepline.web._server import ClientGone, serve_asgi


class App:
    """Answers ``/stream`` with chunks until the client goes, anything else with its method,
    path and body; records what happened."""

    def __init__(self) -> None:
        self.stream_ended = trio.Event()
        self.finish = trio.Event()  # ``/slow`` answers once this is set
        self.disconnects = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            body += message["body"]
            if not message["more_body"]:
                break
        if scope["path"] == "/stream":
            await self._stream(send)
            return
        if scope["path"] == "/slow":
            await self.finish.wait()
        if scope["path"] == "/refuse":  # answered without reading the body: see below
            body = b"refused"
        answer = b"%s %s %s" % (scope["method"].encode(), scope["raw_path"], body)
        headers = [(b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _stream(self, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await trio.sleep(0.01)
        finally:
            self.stream_ended.set()


class RefusingApp(App):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/refuse":  # a 401 before the body, as the token check does
            headers = [(b"content-length", b"7")]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": b"refused"})
            return
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[tuple[int, trio.Event]]:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_asgi(
                app, listener, stop=stop, grace=5.0, task_status=task_status
            )
        )
        yield port, stop
        stop.set()


async def read_answer(stream: trio.SocketStream, buffer: bytes = b"") -> tuple[bytes, bytes]:
    """One content-length answer: (the whole answer, what came after it)."""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive_some(1 << 16)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += await stream.receive_some(1 << 16)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (
        path,
        len(body),
        body,
    )


async def test_pipelined_requests_on_one_connection_are_answered_in_order() -> None:
    async with running(App()) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(post(b"/a?x=1", b"one") + post(b"/b", b"two"))
            first, rest = await read_answer(stream)
            second, _ = await read_answer(stream, rest)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert first.endswith(b"POST /a one")
    assert second.endswith(b"POST /b two")


async def test_an_answer_before_the_body_keeps_the_connection() -> None:
    """A refusal that never reads the body (401, 413) must not cost the client its connection:
    the rest of the body is read and dropped before the next request."""
    async with running(RefusingApp()) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(post(b"/refuse", b"x" * 100_000) + post(b"/after", b"ok"))
            refused, rest = await read_answer(stream)
            after, _ = await read_answer(stream, rest)
    assert refused.startswith(b"HTTP/1.1 401 ")
    assert after.endswith(b"POST /after ok")


async def test_head_gets_the_head_without_the_body() -> None:
    async with running(App()) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"HEAD /x HTTP/1.1\r\nhost: x\r\n\r\n" + post(b"/y", b"z"))
            data = b""
            while not data.endswith(b"POST /y z"):
                data += await stream.receive_some(1 << 16)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-length: 8" in head.lower()  # the GET's length, no body sent
    assert rest.startswith(b"HTTP/1.1 200 ")


async def test_a_stream_ends_when_its_client_goes() -> None:
    app = App()
    async with running(app) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while data.count(b"tick") < 2:
            data += await stream.receive_some(1 << 16)
        assert b"transfer-encoding: chunked" in data.lower()
        await stream.aclose()
        with trio.fail_after(10):
            await app.stream_ended.wait()


async def test_a_request_h11_cannot_parse_is_answered_400_and_closed() -> None:
    async with running(App()) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(1 << 16):
                data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_stopping_closes_idle_connections_and_lets_a_request_finish() -> None:
    app = App()
    async with running(app) as (port, stop):
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await idle.send_all(post(b"/first", b""))
        await read_answer(idle)
        await busy.send_all(post(b"/slow", b""))
        await trio.testing.wait_all_tasks_blocked()
        stop.set()
        with trio.fail_after(10):
            assert await idle.receive_some(1) == b""  # closed by the server
            app.finish.set()
            answer, _ = await read_answer(busy)
        assert answer.endswith(b"POST /slow ")
        await idle.aclose()
        await busy.aclose()


async def test_a_send_after_the_client_went_raises_an_os_error() -> None:
    """ASGI 2.4: the application learns from ``send`` that nobody listens any more."""
    raised: list[BaseException] = []
    done = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        except OSError as exc:
            raised.append(exc)
            raise
        finally:
            done.set()

    async with running(app) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await stream.receive_some(1 << 16)
        await stream.aclose()
        with trio.fail_after(10):
            await done.wait()
    assert not raised or isinstance(raised[0], ClientGone)
