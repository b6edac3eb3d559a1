"""The one HTTP client that ``http`` steps and webhooks share: made on first use, bounded per host.

Apart from the step and webhook code (:mod:`stepline.engine._http`) because the executor makes
its client at start, and a ``stepline serve`` that never sends a request should load no more of
HTTP than this (NOTES.md, Performance); httpx itself is imported when the client is first made.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import trio

from .._lazy import loading
from .._version import __version__

if TYPE_CHECKING:
    import httpx

__all__ = ["HOST_CONNECTIONS", "POOL_WAIT", "HostBusy", "HttpClient"]


HOST_CONNECTIONS = 16
"""Requests in flight to one host (scheme, name, port) at once; more wait for a slot."""

POOL_WAIT = 60.0
"""Seconds a request with no deadline of its own (no step ``timeout``) waits for a slot."""

_USER_AGENT: Final = f"stepline/{__version__}"


class HttpClient:
    """The executor's shared ``httpx.AsyncClient``: made on first use, closed by :meth:`aclose`.

    Making it costs about 0.3 s of CPU the first time (importing httpx, loading the CA bundle
    into an SSL context), so it is made in a worker thread: the event loop, and with it every
    job's heartbeat and the command reader, never stalls for it.

    No client-wide timeout: steps are bounded by their ``timeout`` modifier and webhooks by their
    per-attempt ``timeout``, both as trio cancel scopes, so one rule governs every wait.

    Connections are bounded per host, not in one shared pool: a request first takes one of its
    host's :data:`HOST_CONNECTIONS` slots (:meth:`slot`), and the pool itself has no overall
    limit. With one shared limit, requests to an endpoint that accepts and never answers held
    every connection, and requests to healthy hosts waited behind them forever.
    """

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._lock = trio.Lock()  # the first concurrent users wait for one client
        self._hosts: dict[str, _Host] = {}
        self._per_host = HOST_CONNECTIONS  # read now, so tests can lower them
        self._pool_wait = POOL_WAIT

    async def get(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                with loading("the HTTP client"):  # imports, and reads the CA bundle
                    self._client = await trio.to_thread.run_sync(_new_client)
        return self._client

    @asynccontextmanager
    async def slot(self, url: str, *, bounded: bool) -> AsyncIterator[None]:
        """Hold one of the URL's host's connection slots while a request to it runs.

        ``bounded``: the caller has no deadline of its own, so the wait for a slot is cut at
        :data:`POOL_WAIT` seconds with :class:`HostBusy`; otherwise the caller's deadline
        (a step's ``timeout``, a webhook attempt's) is the only bound.
        """
        origin = _origin(url)
        host = self._hosts.get(origin)
        if host is None:
            host = self._hosts[origin] = _Host(trio.CapacityLimiter(self._per_host))
        host.users += 1
        try:
            with trio.move_on_after(self._pool_wait if bounded else math.inf):
                await host.limiter.acquire()
                try:
                    yield
                finally:
                    host.limiter.release()
                return
            raise HostBusy(
                f"no connection to {origin} within {self._pool_wait:g}s: "
                f"{self._per_host} requests to that host are in flight"
            )
        finally:
            host.users -= 1
            if not host.users:  # hosts are forgotten once idle: the table stays small
                del self._hosts[origin]

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class HostBusy(Exception):
    """Every connection slot of a host stayed taken for :data:`POOL_WAIT` seconds."""


class _Host:
    """One host's connection slots, and the requests holding or waiting for one."""

    __slots__ = ("limiter", "users")

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.users = 0


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit connections are bounded by."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:  # validated URLs have none; keep the raw text as a key anyway
        return url
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def _new_client() -> httpx.AsyncClient:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
    return httpx.AsyncClient(timeout=None, limits=limits, headers={"user-agent": _USER_AGENT})
