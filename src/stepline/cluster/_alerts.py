"""Alerts across the cluster: opened where the job's callback ran, acked from any node.

An ``alert`` callback runs on the node that ran the job; the alert it opens belongs to the
cluster. :class:`ClusterAlerts` takes the place of the in-memory alerts on a node (the same
interface, so the callback runner does not know the difference):

* ``open`` answers at once with an id from a block this node reserved from the shared sequence
  (ids are unique across the cluster, increasing on each node), and the alert is written, with
  its first announcement (``repeat: 0``) for the job's submitter, by the next pass, once the
  writer has committed what it was handed before (the job's ``finished`` among it);
* each pass (a notification that one was opened here, or the poll) also announces the repeats
  that are due, wherever the alert was opened: ``repeat_alerts`` takes each due row once across
  the cluster (an update waits for a concurrent one, then finds the row no longer due);
* ``ack`` from any node's driver is one fenced update (:func:`ack`): ``acked`` once,
  ``already_acked`` after, ``unknown_alert`` for an id never opened.

Announcements go to the job's submitter through ``stepline_events``, like every forwarded event.
Open alerts live in the database, so they outlive the node that opened them (its repeats are
made by the others).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import orjson
import psycopg
import trio

from .._errors import AlreadyAcked, BadCommand, UnknownAlert
from ..triggers._alerts import OpenAlert
from ..wire._commands import Ack
from ..wire._events import Event, RequestId, reply
from ..wire._outbox import encode_event
from ._db import Connection, DatabaseUnavailable
from ._model import job_number
from ._sql import query
from ._wake import Wake

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["BLOCK", "ClusterAlerts", "ack"]

log = logging.getLogger("stepline")

BLOCK: Final = 1000
"""Alert ids a node reserves at a time (the sequence's increment)."""


class ClusterAlerts:
    """The alerts of the cluster, as one node opens, repeats and lists them."""

    def __init__(self, node: ClusterNode, repeat: float, first_block: int) -> None:
        self._node = node
        self._every = repeat if repeat > 0 else None
        self._ids: deque[int] = deque(range(first_block, first_block + BLOCK))
        self._pending: list[tuple[int, int, dict[str, Any], float]] = []
        self._after = 0  # the writer's items to be committed before the pending alerts
        self._open: list[dict[str, Any]] = []  # as of the last pass: for status and stats
        self._wake = Wake()
        self._lock = trio.Lock()  # one pass at a time (the loop, or an ack flushing)
        self._conn = Connection(node.url, f"alerts-{node.id}")

    def open(self, job: str, state: str, text: str, detail: dict[str, Any]) -> str:
        """Open an alert (written and announced by the next pass); returns its id."""
        if not self._ids:
            raise RuntimeError("no alert id left: the reserved blocks ran out")
        number = self._ids.popleft()
        body = {"alert": f"a{number}", "job": job, "state": state, "text": text, **detail}
        self._pending.append((number, job_number(job), body, time.time()))
        self._after = self._node.writer.handed  # the job's `finished` is among them
        self._wake.set()
        return f"a{number}"

    def ack(self, alert_id: str) -> OpenAlert:
        """Acks go through the database (:meth:`close`), never through this synchronous call."""
        raise BadCommand("on a cluster node, an alert is acked through the database")

    async def close(self, alert_id: str) -> tuple[str, str]:
        """Close an open alert of the cluster, whichever node opened it (the ``ack`` command,
        and ``POST /alerts/{id}/ack`` of the HTTP front)."""
        digits = alert_id[1:]
        if not alert_id.startswith("a") or not digits.isdigit() or len(digits) > 18:
            raise UnknownAlert(f"unknown alert {alert_id!r}")
        await self.flush()  # an alert opened here a moment ago is in the table first
        number = int(digits)

        def close(conn: Any) -> int:
            row = conn.execute(query("ack_alert"), {"alert": number}).fetchone()
            if row is not None:
                return int(row[0])
            acked = conn.execute(query("alert_acked"), {"alert": number}).fetchone()
            if acked is None:
                raise UnknownAlert(f"unknown alert {alert_id!r}")
            raise AlreadyAcked(f"alert {alert_id} was already acked")

        job = await self._node.commands_conn.run(close)
        return alert_id, f"j{job}"

    def records(self) -> list[dict[str, Any]]:
        """The open alerts as of the last pass (``status`` reads the table itself)."""
        return list(self._open)

    async def run(self) -> None:
        """Write what was opened here, announce the due repeats, refresh the open list."""
        try:
            while True:
                await self._wake.wait(self._node.poll)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                await self._conn.aclose()

    async def flush(self) -> None:
        """One pass now."""
        async with self._lock:
            # An alert is announced after its job's `finished` (callbacks run after it, as in
            # one process): that event went to the writer, whose commit comes first.
            await self._node.writer.wait_committed(self._after)
            pending, self._pending = self._pending, []
            refill = len(self._ids) < BLOCK // 2
            step = functools.partial(
                _pass, node=self._node.id, every=self._every, pending=pending, refill=refill
            )
            try:
                block, self._open = await self._conn.run(step)
            except (DatabaseUnavailable, psycopg.Error) as exc:
                log.warning("cannot write or repeat alerts yet: %s", exc)
                self._pending[:0] = pending  # kept, in order, for the next pass
                return
            if block is not None:
                self._ids.extend(range(block, block + BLOCK))

    async def read_open(self, conn: Connection) -> list[dict[str, Any]]:
        """The open alerts of the cluster, read now (for ``status`` and ``stats``)."""
        rows = await conn.run(lambda c: c.execute(query("open_alert_records")).fetchall())
        return [_record(*row) for row in rows]


def _pass(
    conn: Any,
    *,
    node: int,
    every: float | None,
    pending: list[tuple[int, int, dict[str, Any], float]],
    refill: bool,
) -> tuple[int | None, list[dict[str, Any]]]:
    """One transaction: new alerts and their first announcement, due repeats, the open list."""
    events: list[tuple[int, bytes]] = []
    if pending:
        jobs = [p[1] for p in pending]
        owners = dict(conn.execute(query("submitters_of"), {"ids": jobs}).fetchall())
        submitters = [owners.get(p[1], node) for p in pending]  # a pruned job: this node's
        bodies = [orjson.dumps(p[2]) for p in pending]
        conn.execute(
            query("open_alerts"),
            {"ids": [p[0] for p in pending], "jobs": jobs, "submitters": submitters,
             "bodies": bodies, "opened": [p[3] for p in pending], "every": every},
        )  # fmt: skip
        events += [(s, _announcement(b, 0)) for s, b in zip(submitters, bodies, strict=True)]
    for submitter, body, repeats in conn.execute(query("repeat_alerts")).fetchall():
        events.append((submitter, _announcement(bytes(body), repeats)))
    if events:
        conn.execute(
            query("forward_events"),
            {"submitters": [s for s, _ in events], "bodies": [b for _, b in events]},
        )
        conn.execute(
            query("notify_nodes"), {"nodes": sorted({s for s, _ in events}), "payload": "events"}
        )
    block = conn.execute(query("reserve_alert_ids")).fetchone()[0] if refill else None
    rows = conn.execute(query("open_alert_records")).fetchall()
    return block, [_record(*row) for row in rows]


def _announcement(body: bytes, repeat: int) -> bytes:
    data = orjson.loads(body)
    head = {k: data.pop(k) for k in ("alert", "job", "state", "text")}
    alert: Event = {"event": "alert", "ts": time.time(), **head, "repeat": repeat, **data}
    return encode_event(alert)


def _record(body: bytes, opened: float, repeats: int) -> dict[str, Any]:
    data = orjson.loads(bytes(body))
    return {"alert": data["alert"], "job": data["job"], "state": data["state"],
            "text": data["text"], "opened": opened, "repeats": repeats}  # fmt: skip


async def ack(node: ClusterNode, cmd: Ack, rid: RequestId) -> None:
    """The ``ack`` command, on any node."""
    alert, job = await node.alerts.close(cmd.alert)
    node.stream.emit(reply("acked", rid, alert=alert, job=job))
