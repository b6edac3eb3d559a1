"""Templates shared by every node: ``define`` on one is visible to all.

A definition is written to ``stepline_templates`` (``defined`` waits for the commit) with a new
version number, and ``stepline_templates`` is notified. Every node keeps the executor's template
table current by reading the definitions newer than the last version it saw, on a notification
or at the poll. A submit naming a template this node has not seen yet reads them first
(:mod:`._commands`), so a ``define`` on one node followed by a ``submit`` on another never fails
for want of a notification.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg
import trio

from .._errors import StoreFailed
from ..store._decode import Corrupt, decode_template
from ._db import Connection, DatabaseUnavailable
from ._sql import query

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["follow_templates", "refresh_templates", "write_templates"]

log = logging.getLogger("stepline")


async def follow_templates(node: ClusterNode) -> None:
    """The node's template task: read new definitions on each notification, or every five
    poll intervals, so a template defined on any node is soon usable here."""
    conn = Connection(node.url, f"templates-{node.id}")
    try:
        while True:
            try:
                await refresh_templates(node, conn)
            except (DatabaseUnavailable, psycopg.Error) as exc:
                log.warning("cannot read templates: %s", exc)
            await node.wakes["templates"].wait(node.poll * 5)
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()


async def refresh_templates(node: ClusterNode, conn: Connection) -> None:
    """Read the definitions newer than the last seen into the executor's template table."""
    since = node.template_version
    rows: list[Any] = await conn.run(
        lambda c: c.execute(query("templates_since"), {"since": since}).fetchall()
    )
    for name, data, version in rows:
        try:
            key, job = decode_template(name, bytes(data))
        except Corrupt as exc:
            log.warning("ignoring a stored template: %s", exc)
        else:
            node.executor.templates[key] = job
        node.template_version = max(node.template_version, version)


async def write_templates(node: ClusterNode) -> None:
    """Write the pending definitions and tell every node; ``StoreFailed`` if it could not."""
    pending, node.pending_templates = node.pending_templates, []
    if not pending:
        return

    def write(conn: Any) -> None:
        for name, job in pending:
            conn.execute(query("put_template"), {"name": name, "job": job})
        conn.execute(query("notify"), {"channel": "stepline_templates", "payload": ""})

    try:
        await node.commands_conn.run(write)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        raise StoreFailed(f"the template could not be written: {exc}") from None
