"""The HTTP front as the server sees it: a listening socket, the event log, and the service.

The socket is bound when the front is made, before ``ready`` is written, so a port in use is a
clear start-up error (exit 2), and ``ready`` can say where the front listens (``"http"``: the
URL, with the real port when ``--http 0`` let the system choose). The front then runs as an
attachment of the executor (:mod:`stepline.engine._attach`): Hypercorn's trio worker serves the
app inside the executor's service nursery, started with ``task_status`` so requests are taken
from the moment the workers are; once every job has finished, the event log is closed (open
event streams end) and Hypercorn is asked to shut down gracefully.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Final

import attrs
import trio

from ..engine._attach import Attachment, ShutdownMode
from ..engine._executor import Executor
from ..wire._events import Event
from ._auth import is_loopback
from ._events import EventLog
from ._metrics import Metrics
from ._share import LoopShare

__all__ = ["BadBind", "HttpFront", "HttpOptions", "parse_bind"]

log = logging.getLogger("stepline")

GRACE: Final = 2.0  # seconds open requests get once the executor has stopped


class BadBind(Exception):
    """``--http`` cannot be served as given (bad address, port in use, token missing)."""


@attrs.frozen
class HttpOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    hook_secret: str | None = None
    max_body: int = 1 << 20


def parse_bind(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:8080`` for IPv6) as ``(host, port)``; 127.0.0.1 by default."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise BadBind(f"--http {text!r}: expected [HOST:]PORT") from None
    if not 0 <= port <= 65535:
        raise BadBind(f"--http {text!r}: port must be 0 to 65535")
    return host, port


class HttpFront:
    """The :class:`~stepline.server._serve.Front` that ``serve --http`` hands the server."""

    def __init__(self, options: HttpOptions) -> None:
        if options.token is None and not is_loopback(options.host):
            raise BadBind(
                f"--http {options.host}: binding beyond this machine needs a token "
                "(--http-token or STEPLINE_HTTP_TOKEN)"
            )
        self.options = options
        self.log = EventLog()
        self._socket = _listen(options.host, options.port)
        self.host, self.port = self._socket.getsockname()[:2]
        self._metrics: Metrics | None = None
        self._share = LoopShare()
        self._stop = trio.Event()
        self._stopped = trio.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def observe(self, event: Event, line: bytes) -> None:
        self.log.append(event, line)
        self._share.observe(event)
        if self._metrics is not None:
            self._metrics.observe(event)

    def ready_fields(self) -> dict[str, Any]:
        return {"http": self.url}

    def open(self, executor: Executor) -> Attachment:
        from ._app import build_app

        self._metrics = Metrics(executor)
        self._app = build_app(
            executor,
            self.log,
            self._metrics,
            self._share,
            token=self.options.token,
            hook_secret=self.options.hook_secret,
            max_body=self.options.max_body,
        )
        return self

    # -- the attachment ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config as HypercornConfig
        from hypercorn.trio import serve

        config = HypercornConfig()
        config.bind = [f"fd://{self._socket.detach()}"]
        config.graceful_timeout = GRACE
        config.accesslog = None
        config.loglevel = "WARNING"
        self._share.adopt(trio.lowlevel.current_task())  # Hypercorn's tasks, spawned below
        trio.lowlevel.add_instrument(self._share)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._serve, serve, config)
                task_status.started()
        finally:
            trio.lowlevel.remove_instrument(self._share)
            self._stopped.set()

    async def _serve(self, serve: Any, config: Any, *, task_status: trio.TaskStatus[None]) -> None:
        await serve(self._app, config, shutdown_trigger=self._stop.wait, task_status=task_status)

    def shutdown(self, mode: ShutdownMode) -> None:
        """Keep answering: status, logs and events still matter while jobs drain; submits are
        refused by the executor itself (``shutting_down``)."""

    async def drain(self) -> None:
        self.log.close()
        self._stop.set()
        with trio.move_on_after(GRACE + 1):
            await self._stopped.wait()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        sock = socket.create_server(infos[0][4][:2], family=infos[0][0], backlog=128)
    except OSError as exc:
        raise BadBind(f"--http {host}:{port}: {exc.strerror or exc}") from None
    return sock
