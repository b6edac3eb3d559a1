"""The client side of the protocol, without any I/O: what both subprocess clients share.

A :class:`ClientSession` turns commands into lines and incoming events into state: replies
matched to their commands by ``id`` (the session numbers its commands 1, 2, 3, ...), job events
routed into per-job histories, ``ready`` and ``bye`` noted. It never reads, writes or waits:
:class:`stepline.Client` drives it from a reader thread and :class:`stepline.AsyncClient` from a
trio task, each with its own way to wait. Keeping the protocol logic here means the two clients
cannot drift apart.

An ``error`` event without an ``id`` (``bad_json``, ``line_too_long``: the server could not read
the line, so it could not echo anything) is matched to the oldest unanswered command. That is
sound because ``stepline serve`` handles its input one line at a time and answers each command
before reading the next, so replies come in command order. Without it, one over-long submit
would leave its caller waiting forever.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson

from .._errors import ClientError
from ..wire._events import Event
from ._history import EventHistory, HistoryRouter

__all__ = [
    "DISCONNECTED",
    "SERVE",
    "ClientError",
    "ClientSession",
    "Tap",
    "call_tap",
    "decode_event",
    "encode_command",
    "exit_reason",
    "present",
]

log = logging.getLogger("stepline")

DISCONNECTED = "disconnected"
"""The code of a :class:`ClientError` raised because ``stepline serve`` is gone."""

SERVE = (sys.executable, "-m", "stepline", "serve")
"""The command a client spawns by default; its ``args`` are appended."""

Tap = Callable[[str, Event], None]
"""Sees every protocol message: ``(">", command)`` sent and ``("<", event)`` received."""

H = TypeVar("H", bound=EventHistory)


def encode_command(command: dict[str, Any]) -> bytes:
    """One command line. Refuses, here and now, what the server could not parse (NaN, lone
    surrogates): such a line would be answered with an error that cannot name its command."""
    try:
        text = json.dumps(command, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise ClientError("bad_json", f"command cannot be sent as JSON: {exc}") from None


def decode_event(line: bytes) -> Event | None:
    """An event line from the child; None for a blank line or one that is not a JSON object
    (a bug in the child: logged and skipped, so one bad line cannot stop the reader)."""
    if not line.strip():
        return None
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError:
        log.warning("stepline serve wrote a line that is not JSON: %.200r", line)
        return None
    if not isinstance(ev, dict):
        log.warning("stepline serve wrote a line that is not an object: %.200r", line)
        return None
    return ev


def call_tap(tap: Tap, direction: str, message: Event) -> None:
    """Show a message to the tap; a failing tap is logged, never allowed to stop the reader."""
    try:
        tap(direction, message)
    except Exception:
        log.exception("the client's tap raised")


def present(**fields: Any) -> dict[str, Any]:
    """The fields that were given: the protocol has no ``null`` for an absent option."""
    return {k: v for k, v in fields.items() if v is not None}


def exit_reason(said_bye: bool, status: int | None) -> str:
    """Why a client's child stopped answering, for the ``disconnected`` error."""
    if said_bye:
        return "stepline serve has shut down"
    return f"stepline serve exited unexpectedly (status {status})"


class _Pending(Generic[H]):
    """A command waiting for its reply."""

    __slots__ = ("history", "reply")

    def __init__(self) -> None:
        self.reply: Event | None = None
        self.history: H | None = None  # for a submit: the accepted job's history


class ClientSession(Generic[H]):
    """Protocol state of one client connection (see the module doc)."""

    def __init__(self, history: Callable[[str], H]) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending[H]] = {}
        self._router = HistoryRouter(history)
        self.ready: Event | None = None
        self.said_bye = False
        self.gone: str | None = None  # why no more events will come, once that is so

    def command(self, op: str, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A new command with a fresh id, registered as waiting for its reply."""
        if self.gone is not None:
            raise ClientError(DISCONNECTED, self.gone)
        request_id = next(self._ids)
        self._pending[request_id] = _Pending()
        return request_id, {"op": op, "id": request_id, **fields}

    def forget(self, request_id: int) -> None:
        """Stop waiting for a command's reply (it could not be sent)."""
        self._pending.pop(request_id, None)

    def receive(self, ev: Event) -> H | None:
        """Take in one event; returns the job history it was routed to, if any."""
        kind = ev.get("event")
        if kind == "ready":
            self.ready = ev
        elif kind == "bye":
            self.said_bye = True
        history = self._router.route(ev)
        self._match_reply(ev, history)
        return history

    def disconnect(self, reason: str) -> list[H]:
        """The child's stdout closed: returns the histories that will never finish."""
        if self.gone is None:
            self.gone = reason
        return self._router.live()

    def answered(self, request_id: int) -> bool:
        pending = self._pending.get(request_id)
        return pending is None or pending.reply is not None or self.gone is not None

    def take_reply(self, request_id: int) -> tuple[Event, H | None]:
        """A command's reply (and, for a submit, its job's history); an ``error`` reply, or no
        reply because the child is gone, raises :class:`ClientError`."""
        pending = self._pending.pop(request_id, None)
        if pending is None or pending.reply is None:
            raise ClientError(DISCONNECTED, self.gone or "no reply")
        reply = pending.reply
        if reply.get("event") == "error":
            raise ClientError(str(reply.get("code")), str(reply.get("message")))
        return reply, pending.history

    def _match_reply(self, ev: Event, history: H | None) -> None:
        if "id" in ev:
            pending = self._pending.get(ev["id"])
        elif ev.get("event") == "error":
            pending = self._oldest_unanswered()
        else:
            return
        if pending is not None and pending.reply is None:
            pending.reply = ev
            if ev.get("event") == "accepted":
                pending.history = history

    def _oldest_unanswered(self) -> _Pending[H] | None:
        return next((p for p in self._pending.values() if p.reply is None), None)
