"""LISTEN on a dedicated connection, and a check that it is still alive.

Notifications carry no data a node relies on (job ids at most): they only wake the task that
reads the tables (:mod:`stepline.cluster._wake`). Channels: ``stepline_jobs`` (jobs were
queued: claim), ``stepline_n<ID>`` (something for node ID: events to deliver, a job to cancel),
``stepline_templates``.

**A LISTEN that died silently.** A half-open connection (a failover behind a proxy, a NAT that
dropped the flow) raises nothing: the socket simply stays quiet, and a listener that trusts it
waits forever. So, whenever the connection has been quiet for ``check`` seconds, the listener
asks the server ``pg_listening_channels()`` on that same connection, with a deadline. No answer
in time, an error, or a missing channel: the connection is dropped, a new one LISTENs again,
and every waiter is woken to look at the tables, so whatever arrived meanwhile is found at
once. The poll (every waiter's timeout) stays as the last resort.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import trio

from ._db import DatabaseUnavailable, connect
from ._wake import Wake

__all__ = ["Listener"]

log = logging.getLogger("stepline")

_RETRY = 1.0  # seconds between attempts to connect again


class Listener:
    """Turns notifications on ``channels`` into :class:`Wake` s; reconnects when needed."""

    def __init__(
        self, url: str, channels: Mapping[str, Sequence[Wake]], *, check: float, purpose: str
    ) -> None:
        self._url = url
        self._channels = dict(channels)
        self._check = check
        self._purpose = purpose
        self.reconnects = 0  # connections made after the first: for tests and logs

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while True:
            conn = None
            try:
                conn = await trio.to_thread.run_sync(self._open)
                if started:
                    self.reconnects += 1
                    log.warning("LISTEN connection restored (%s)", self._purpose)
                self._wake_all()  # anything may have arrived while nobody listened
                if not started:
                    started = True
                    task_status.started()
                await self._listen(conn)
            except (DatabaseUnavailable, psycopg.Error, trio.TooSlowError) as exc:
                log.warning("LISTEN connection lost (%s): %s", self._purpose, exc or "no answer")
            finally:
                if conn is not None:
                    conn.close()  # closing a socket does not block
            if not started:
                started = True
                task_status.started()  # the poll works meanwhile
            self._wake_all()
            await trio.sleep(_RETRY)

    def _open(self) -> psycopg.Connection[Any]:
        conn = connect(self._url, self._purpose, autocommit=True)
        try:
            for channel in self._channels:
                conn.execute(f'LISTEN "{channel}"')
        except psycopg.Error:
            conn.close()
            raise
        return conn

    async def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while True:
            with trio.move_on_after(self._check) as quiet:
                await trio.lowlevel.wait_readable(conn.pgconn.socket)
            if quiet.cancelled_caught:
                await self._still_listening(conn)
                continue
            for notify in conn.notifies(timeout=0):  # data is there: this does not block
                for wake in self._channels.get(notify.channel, ()):
                    wake.set()

    async def _still_listening(self, conn: psycopg.Connection[Any]) -> None:
        """Raise unless the server answers, on this connection, that it listens."""

        def ask() -> list[Any]:
            return conn.execute("SELECT pg_listening_channels()").fetchall()

        with trio.fail_after(self._check):
            rows = await trio.to_thread.run_sync(ask, abandon_on_cancel=True)
        missing = set(self._channels) - {row[0] for row in rows}
        if missing:
            raise DatabaseUnavailable(f"not listening on {sorted(missing)}")

    def _wake_all(self) -> None:
        for wakes in self._channels.values():
            for wake in wakes:
                wake.set()
