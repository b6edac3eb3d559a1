"""The link between the executor's process and the front's: typed, length-prefixed frames.

One socket pair carries both directions. The executor's process sends the events (the lines
stdout got, as they were encoded: the front's process reads what it needs of each),
the answers to forwarded requests, a notice when events had to be dropped, and the end of
the events; the front's process sends the requests it forwards. ``POST /jobs`` is not forwarded as a
request: the front's process decodes it and sends the submit as a protocol line, many to a
frame (``SUBMITS``), and the executor's process answers the whole batch in one frame
(``ADMITTED``: a job id or an error for each line, in order). A frame is one kind byte, a
4-byte big-endian length, and the payload; requests, answers and batches carry a number and a
JSON head (method, target, headers; status and headers; the batch's counts or results) before
the raw body (a batch's lines, each ending with ``\n``).
"""

from __future__ import annotations

import struct
from typing import Any, Final

import orjson
import trio

__all__ = [
    "ADMITTED",
    "ANSWER",
    "CLOSED",
    "EVENTS",
    "GAP",
    "REQUEST",
    "SUBMITS",
    "FrameReader",
    "LinkWriter",
    "frame",
    "pack_message",
    "unpack_message",
]

EVENTS: Final = b"E"  # events: the JSON lines stdout got, each ending with ``\n``
ANSWER: Final = b"A"  # an answer: number, head {status, headers}, body
GAP: Final = b"G"  # events were dropped (the front fell too far behind): how many
CLOSED: Final = b"C"  # the executor has stopped: no more events
REQUEST: Final = b"Q"  # a request: number, head {method, target, headers, ...}, body
SUBMITS: Final = b"S"  # submit lines: number, head {answered: the front's own refusals}, lines
ADMITTED: Final = b"D"  # a batch admitted: number, head {results: an id or [code, message]}

_HEADER: Final = struct.Struct("!cI")
_MESSAGE: Final = struct.Struct("!II")
_RECEIVE: Final = 1 << 18


def frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def pack_message(number: int, head: dict[str, Any], body: bytes) -> bytes:
    """A request's or an answer's payload."""
    encoded = orjson.dumps(head)
    return _MESSAGE.pack(number, len(encoded)) + encoded + body


def unpack_message(payload: bytes) -> tuple[int, Any, bytes]:
    number, size = _MESSAGE.unpack_from(payload)
    start = _MESSAGE.size
    return number, orjson.loads(payload[start : start + size]), payload[start + size :]


class FrameReader:
    """Frames from a stream, as ``(kind, payload)``; ``None`` once the other side has closed."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> tuple[bytes, bytes] | None:
        while True:
            if len(self._buffer) >= _HEADER.size:
                kind, size = _HEADER.unpack_from(self._buffer)
                end = _HEADER.size + size
                if len(self._buffer) >= end:
                    payload = bytes(self._buffer[_HEADER.size : end])
                    del self._buffer[:end]
                    return kind, payload
            data = await self._stream.receive_some(_RECEIVE)
            if not data:
                return None
            self._buffer += data


class LinkWriter:
    """The front's side of the link, written by several tasks: one frame at a time, whole."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._lock = trio.Lock()

    async def send(self, kind: bytes, payload: bytes) -> None:
        async with self._lock:
            await self._stream.send_all(frame(kind, payload))
