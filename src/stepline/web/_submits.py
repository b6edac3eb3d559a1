"""``POST /jobs`` in the front's process: decoded here, admitted by the executor in batches.

A submit forwarded as a request cost the executor's process 0.32-0.39 ms of its loop (the
request's head and body over the link, JSON decoded and encoded, a handler task's turn, the
share's wait, the answer's frame), against a few microseconds for a submit line on stdin
(NOTES, "HTTP front"). So the busiest endpoint is done here, on the front's own core: the
token, the body's size, its JSON and the command's fields (the protocol's own decoders, so
the same bodies are refused with the same codes), and the submit becomes the protocol line a
stdin driver would write. The lines go over the link many to a frame, and the executor's
process admits them as its stdin reader does (``web/_admit.py``), answering the whole batch in
one frame. What needs the executor stays there: the job's validation (templates, the run
policy and the callbacks are the executor's), its id, a full queue's wait.

One batch is in flight at a time: submits that arrive meanwhile wait here and go together in
the next, so the busier the executor, the larger its batches and the less each submit costs
it. A full queue holds the batch's answer, so callers wait for their answers (every
connection sends its next request only after its answer), and what waits here is at most one
submit per open connection.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

import orjson
import trio

from ..wire._commands import CommandRefused, decode_command
from ..wire._plain import plain_submit
from ._api import parse_json
from ._auth import credentials_ok
from ._errors import ApiError, status_of
from ._link import SUBMITS, LinkWriter, pack_message, unpack_message

__all__ = ["MAX_BATCH", "Submits", "read_limited", "submit_line"]

MAX_BATCH: Final = 64  # submits in one frame at most (the stdin reader yields every 64 too)
JSON: Final = b"application/json"
_TOKEN_REFUSED: Final = ("unauthorized", "this server needs Authorization: Bearer TOKEN")
_UNAVAILABLE: Final = ("unavailable", "the executor is not answering; try again")

Result = str | tuple[str, str]  # the job's id, or the refusal's code and message


async def read_limited(receive: Any, limit: int) -> bytes:
    """An ASGI request's body, at most one byte past ``limit`` (the rest is the server's to
    drop): enough to tell that it is too long."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message["body"])
        size += len(message["body"])
        if not message["more_body"]:
            break
    return b"".join(chunks)[: limit + 1]


def submit_line(body: bytes, max_body: int) -> bytes:
    """The ``submit`` line for a ``POST /jobs`` body; :class:`ApiError` as the executor's
    process answered it (the body's size, its JSON, the command's fields)."""
    if len(body) > max_body:
        raise ApiError("line_too_long", f"request body exceeds {max_body} bytes")
    obj = parse_json(body)
    if not isinstance(obj, dict):
        raise ApiError("bad_command", "the request body must be a JSON object")
    if "op" in obj or "id" in obj:
        raise ApiError("bad_command", "'op' and 'id' are stdin fields; the URL says what to do")
    command = {**obj, "op": "submit"}
    line = orjson.dumps(command)
    if plain_submit(command) is None:  # a template, or a field to explain: the strict decoder
        try:
            decode_command(line)
        except CommandRefused as refused:
            raise ApiError.of(refused.error) from None
    return line


class _Waiting:
    """A submit waiting for its batch's answer."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Result = _UNAVAILABLE


class Submits:
    """The ASGI application for ``POST /jobs`` (exactly that target), and the task that sends
    its batches (:meth:`run`); :meth:`admitted` takes the answers."""

    def __init__(self, writer: LinkWriter, token: str | None, max_body: int) -> None:
        self._writer = writer
        self._token = token
        self._max_body = max_body
        self._lines: list[bytes] = []
        self._waiting: list[_Waiting] = []
        self._answered: Counter[int] = Counter()  # statuses answered here, not yet told
        self._in_flight: dict[int, list[_Waiting]] = {}
        self._next = 0
        self._wake = trio.lowlevel.ParkingLot()
        self.broken = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = await read_limited(receive, self._max_body)
        if self._token is not None and not credentials_ok(
            _header(scope["headers"], b"authorization"), "", self._token
        ):
            self._count(401)
            await _answer(send, 401, _refusal(_TOKEN_REFUSED), [(b"www-authenticate", b"Bearer")])
            return
        try:
            line = submit_line(body, self._max_body)
        except ApiError as exc:
            status = status_of(exc.code)
            self._count(status)
            await _answer(send, status, _refusal((exc.code, exc.message)))
            return
        result = await self._admit(line)
        if isinstance(result, str):
            await _answer(send, 202, b'{"job":%s}' % orjson.dumps(result))
        else:
            await _answer(send, status_of(result[0]), _refusal(result))

    async def _admit(self, line: bytes) -> Result:
        if self.broken:
            return _UNAVAILABLE
        waiting = _Waiting()
        self._lines.append(line)
        self._waiting.append(waiting)
        self._wake.unpark_all()
        await waiting.done.wait()
        return waiting.result

    def _count(self, status: int) -> None:
        """A refusal answered here is counted in the executor's metrics with the next batch."""
        self._answered[status] += 1
        self._wake.unpark_all()

    async def run(self) -> None:
        """Send the waiting submits as one batch whenever none is in flight."""
        while not self.broken:
            if self._in_flight or not (self._lines or self._answered):
                await self._wake.park()
                continue
            lines, self._lines = self._lines[:MAX_BATCH], self._lines[MAX_BATCH:]
            waiting, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            answered = {str(status): count for status, count in self._answered.items()}
            head = {"answered": answered} if answered else {}
            self._answered.clear()
            number = self._next
            self._next += 1
            self._in_flight[number] = waiting
            body = b"".join(line + b"\n" for line in lines)
            try:
                await self._writer.send(SUBMITS, pack_message(number, head, body))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.break_off()

    def admitted(self, payload: bytes) -> None:
        """A batch's answer: each submit's id or refusal, in the order they were sent."""
        number, head, _ = unpack_message(payload)
        batch = self._in_flight.pop(number, None)
        if batch is None:  # a batch of counts only, or the executor's process is gone
            return
        for waiting, result in zip(batch, head["results"], strict=True):
            waiting.result = result if isinstance(result, str) else (result[0], result[1])
            waiting.done.set()
        self._wake.unpark_all()

    def break_off(self) -> None:
        """The executor's process is gone: every waiting submit is answered 503."""
        self.broken = True
        for waiting in [*self._waiting, *(w for batch in self._in_flight.values() for w in batch)]:
            waiting.done.set()  # its result is still _UNAVAILABLE
        self._lines.clear()
        self._waiting.clear()
        self._in_flight.clear()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in headers if key == name), "")


def _refusal(refusal: tuple[str, str]) -> bytes:
    return orjson.dumps({"code": refusal[0], "message": refusal[1]})


async def _answer(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", JSON), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
