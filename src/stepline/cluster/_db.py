"""Connections to the cluster's PostgreSQL: synchronous psycopg, used from trio worker threads.

**Why synchronous psycopg in threads.** psycopg's async API (and asyncpg) run on asyncio only.
A synchronous connection used by one thread at a time is plain and well tested; each
:class:`Connection` owns a ``CapacityLimiter(1)``, so "one user at a time" is structural, and a
whole batch of statements goes over in one thread hop (:meth:`Connection.run` takes a function
of the raw connection). A node opens a few connections, one per concern, so that a slow status
query never delays a lease renewal.

**Broken connections.** A call that fails because the connection broke (the server restarted,
a pooler dropped it, :func:`pg_terminate_backend`) raises :class:`DatabaseUnavailable`; the next
call connects again. A connection the server closed while it was idle is found before it is
used (:func:`_usable`), so a command after a server restart is not refused for it. TCP
keepalives are on, so a half-open connection is found by the kernel too, not only by a timeout.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio

__all__ = ["Connection", "DatabaseUnavailable", "connect"]

log = logging.getLogger("stepline")

_T = TypeVar("_T")

_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "connect_timeout": 5,
}


class DatabaseUnavailable(Exception):
    """The database could not be reached, or the connection broke mid-call."""


def connect(url: str, purpose: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A new connection named ``stepline-PURPOSE`` (visible in ``pg_stat_activity``)."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, application_name=f"stepline-{purpose}", **_KEEPALIVES
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from None


class Connection:
    """One database connection, used by one thread at a time, reconnected when it broke."""

    def __init__(self, url: str, purpose: str) -> None:
        self._url = url
        self.purpose = purpose
        self._conn: psycopg.Connection[Any] | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``fn(connection)`` on a worker thread, inside one transaction (committed if it
        returns, rolled back if it raises). A cancellation waits for the call to end: a
        transaction is never abandoned half made."""
        return await trio.to_thread.run_sync(self._call, fn, limiter=self._limiter)

    async def run_one(self, statement: str, params: dict[str, Any]) -> list[Any]:
        """One statement, its own transaction (no ``BEGIN``/``COMMIT``: one round trip where
        :meth:`run` takes three); returns its rows."""
        return await trio.to_thread.run_sync(
            self._call, lambda c: c.execute(statement, params).fetchall(), False,
            limiter=self._limiter,
        )  # fmt: skip

    def _call(self, fn: Callable[[psycopg.Connection[Any]], _T], block: bool = True) -> _T:
        conn = self._conn
        if conn is None or not _usable(conn):
            if conn is not None:
                conn.close()
            conn = self._conn = connect(self._url, self.purpose, autocommit=True)
        try:
            if not block:
                return fn(conn)  # autocommit: the statement is its own transaction
            with conn.transaction():
                return fn(conn)
        except psycopg.OperationalError as exc:
            if conn.closed or conn.broken:
                self._conn = None
                raise DatabaseUnavailable(f"the database connection broke: {exc}") from None
            raise

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close, limiter=self._limiter)


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection may be used again. A server speaks to an idle connection that
    listens for nothing only to say goodbye (its backend terminated, the server restarting):
    a socket with something to read means that the first statement would fail with it, though
    the database may well answer a new connection. Asking costs a ``select``, not a round trip.
    """
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
