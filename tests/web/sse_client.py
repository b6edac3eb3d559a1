"""A small Server-Sent Events client for tests: h11 over a trio TCP stream.

httpx's streaming responses, stopped midway (an event stream never ends), leave httpcore's body
generators to the garbage collector, and trio reports each one; a test that reads some events
and stops is the normal case here, so this client owns its connection and closes it whole.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import trio

Message = tuple[int, dict[str, Any]]


class EventStream:
    """``async with EventStream(url, params, headers) as s: await s.read(n)``."""

    def __init__(
        self, base: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        parts = urlsplit(base)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._target = "/events" + (f"?{urlencode(params)}" if params else "")
        self._headers = [("host", f"{self._host}:{self._port}"), *(headers or {}).items()]
        self._conn = h11.Connection(h11.CLIENT)
        self._buffer = b""
        self._event_id: int | None = None
        self.status = 0
        self.content_type = ""

    async def __aenter__(self) -> EventStream:
        self._stream = await trio.open_tcp_stream(self._host, self._port)
        request = h11.Request(method="GET", target=self._target, headers=self._headers)
        await self._stream.send_all(self._conn.send(request) + self._conn.send(h11.EndOfMessage()))
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.content_type = dict(event.headers).get(b"content-type", b"").decode()
                return self

    async def __aexit__(
        self, *exc: type[BaseException] | BaseException | TracebackType | None
    ) -> None:
        await self._stream.aclose()

    async def _next(self) -> Any:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._conn.receive_data(await self._stream.receive_some(1 << 16))

    async def read(self, count: int) -> list[Message]:
        """The next ``count`` messages (id, event); comments and keepalives are skipped."""
        messages: list[Message] = []
        while len(messages) < count:
            while b"\n" not in self._buffer:
                event = await self._next()
                if type(event) in (h11.EndOfMessage, h11.ConnectionClosed):
                    raise EOFError(f"stream ended after {messages}")
                self._buffer += bytes(event.data)
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.startswith(b"id: "):
                self._event_id = int(line[4:])
            elif line.startswith(b"data: "):
                assert self._event_id is not None
                messages.append((self._event_id, json.loads(line[6:])))
        return messages
