"""Alerts: an ``alert`` callback's announcement that stays open until the driver acks it.

An alert is opened with an id (``a1``, ``a2``, ... in order) and announced at once with an
``alert`` event (``repeat: 0``). While it is open it is announced again every ``repeat`` seconds
(``--alert-repeat``; 0 turns repeats off) with the same id and ``repeat: n``. ``{"op": "ack",
"alert": ID}`` closes it (reply ``acked``); acking an alert twice is ``already_acked``, an id that
never existed ``unknown_alert``.

Ids are never reused, so "already acked" needs no memory of acked alerts: an id below the next
one that is not open any more must have been acked. Memory therefore holds open alerts only.

One repeater task serves every alert: it sleeps until the earliest due repeat, or until an alert
is opened or acked (which may change the earliest). Open alerts are kept in opening order, and
all share one interval, so the earliest due is always the first one: no heap needed.
Alerts live in memory: they are not kept across a restart of stepline.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Protocol

import trio
from attrs import define

from .._errors import AlreadyAcked, UnknownAlert
from ..wire._events import EmitFn, Event, event

__all__ = ["AlertBook", "Alerts", "OpenAlert"]

_ID = re.compile(r"a([1-9][0-9]{0,17})")


@define
class OpenAlert:
    """One open alert; ``detail`` is ``{"output": ...}`` or ``{"error": ...}`` of the job."""

    id: str
    job: str
    state: str
    text: str
    detail: dict[str, Any]
    opened: float  # Unix time
    due: float  # trio time of the next repeat
    repeats: int = 0

    def announcement(self) -> Event:
        return event(
            "alert",
            alert=self.id,
            job=self.job,
            state=self.state,
            text=self.text,
            repeat=self.repeats,
            **self.detail,
        )

    def record(self) -> dict[str, Any]:
        """The alert's entry in ``status``/``stats``."""
        return {
            "alert": self.id,
            "job": self.job,
            "state": self.state,
            "text": self.text,
            "opened": self.opened,
            "repeats": self.repeats,
        }


class AlertBook(Protocol):
    """Where alerts are kept: :class:`Alerts` in memory, or a cluster's database."""

    def open(self, job: str, state: str, text: str, detail: dict[str, Any]) -> str: ...

    def ack(self, alert_id: str) -> OpenAlert: ...

    async def close(self, alert_id: str) -> tuple[str, str]:
        """Ack ``alert_id`` wherever it is kept; returns (alert, job) or raises as ``ack``."""
        ...

    def records(self) -> list[dict[str, Any]]: ...

    async def run(self) -> None: ...


class Alerts:
    """The open alerts, and the task that announces them again while they stay open."""

    def __init__(self, emit: EmitFn, repeat: float) -> None:
        self._emit = emit
        self._repeat = repeat if repeat > 0 else math.inf
        self._open: dict[str, OpenAlert] = {}
        self._next_id = 1
        self._changed = trio.lowlevel.ParkingLot()

    def open(self, job: str, state: str, text: str, detail: dict[str, Any]) -> str:
        """Open an alert and announce it; returns its id."""
        alert = OpenAlert(
            id=f"a{self._next_id}",
            job=job,
            state=state,
            text=text,
            detail=detail,
            opened=time.time(),
            due=trio.current_time() + self._repeat,
        )
        self._next_id += 1
        self._open[alert.id] = alert
        self._emit(alert.announcement())
        self._changed.unpark_all()
        return alert.id

    def ack(self, alert_id: str) -> OpenAlert:
        """Close an open alert; raises ``UnknownAlert`` or ``AlreadyAcked``."""
        alert = self._open.pop(alert_id, None)
        if alert is not None:
            self._changed.unpark_all()
            return alert
        match = _ID.fullmatch(alert_id)
        if match is not None and int(match.group(1)) < self._next_id:
            raise AlreadyAcked(f"alert {alert_id} was already acked")
        raise UnknownAlert(f"unknown alert {alert_id!r}")

    async def close(self, alert_id: str) -> tuple[str, str]:
        alert = self.ack(alert_id)
        await trio.lowlevel.checkpoint()
        return alert.id, alert.job

    def records(self) -> list[dict[str, Any]]:
        """The open alerts, oldest first."""
        return [alert.record() for alert in self._open.values()]

    async def run(self) -> None:
        """Announce each open alert again every ``repeat`` seconds until it is acked."""
        while True:
            first = next(iter(self._open.values()), None)
            with trio.move_on_at(first.due if first is not None else math.inf):
                await self._changed.park()
                continue  # opened or acked: the earliest due time may have changed
            self._announce_due()

    def _announce_due(self) -> None:
        now = trio.current_time()
        for alert in list(self._open.values()):
            if alert.due > now:
                break  # opening order = due order: the rest are later
            alert.repeats += 1
            alert.due = now + self._repeat  # the latest due of all: move it to the back
            self._open[alert.id] = self._open.pop(alert.id)
            self._emit(alert.announcement())
