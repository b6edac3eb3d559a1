"""Delivery: the events other nodes wrote for jobs submitted here, onto this node's stdout.

Rows of ``stepline_events`` addressed to this node are taken (deleted and returned) in batches,
in the order they were written, and their events (JSON lines, one or many per row: a writer puts
all of a batch's events for one node in one row) written as they are. Each was committed with
the state change it announces, so what a driver reads never runs ahead of the database. A node
waits for a notification on its own channel, or the poll interval, between batches; it stops
reading while its stdout is congested (the rows wait in the table, not in memory).

Taking and writing a batch is one step under the node's delivery lock, so the claimer can
deliver what is pending before a rescued job of this node starts again (:func:`deliver_now`):
every row committed before it asked is on stdout when it returns.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import psycopg
import trio

from ._db import Connection, DatabaseUnavailable
from ._sql import query

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["deliver", "deliver_now"]

log = logging.getLogger("stepline")

BATCH: Final = 2000  # events taken per transaction


async def deliver(node: ClusterNode) -> None:
    """The node's delivery task: on each wake (a notification, or the poll interval) take
    batches until one comes back short."""
    conn = Connection(node.url, f"deliver-{node.id}")
    try:
        while True:
            await node.wakes["events"].wait(node.poll)
            while await _deliver_batch(node, conn) == BATCH:
                pass  # a full batch: there may be more
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()


async def deliver_now(node: ClusterNode, conn: Connection) -> None:
    """Write every event committed for this node so far (on ``conn``)."""
    while await _deliver_batch(node, conn) == BATCH:
        pass


async def _deliver_batch(node: ClusterNode, conn: Connection) -> int:
    if node.stream.congested:
        await node.stream.wait_writable()
    async with node.delivery_lock:
        try:
            rows = await conn.run_one(query("take_events"), {"node": node.id, "limit": BATCH})
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("cannot read events for this node: %s", exc)
            return 0
        rows.sort(key=lambda row: row[0])
        for _, body in rows:
            for line in bytes(body).splitlines(keepends=True):  # a row holds a batch's events
                node.delivered_line(line)
        return len(rows)
