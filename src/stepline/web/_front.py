"""The HTTP front as the server sees it: a listening socket, the front's process, the relay.

The socket is bound when the front is made, before ``ready`` is written, so a port in use is a
clear start-up error (exit 2), and ``ready`` can say where the front listens (``"http"``: the
URL, with the real port when ``--http 0`` let the system choose). The front then runs as an
attachment of the executor (:mod:`stepline.engine._attach`): it starts the front's own process
(:mod:`._child`, handed the listening socket and one end of a socket pair) and relays over the
pair (:mod:`._relay`): every event out, forwarded requests answered by the application here.
Why a process of its own: HTTP parsing and the event streams' writes cost per byte and per
client, and 200 streams of every event are more than the executor's loop can write beside
its jobs (NOTES, "HTTP front"). Once every job has finished, the events are closed (the
front's process ends its streams and stops) and the process is waited for, killed if need be.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import attrs
import orjson
import trio

from ..engine._attach import Attachment, ShutdownMode
from ..engine._executor import Executor
from ..wire._events import Event
from ._auth import is_loopback
from ._metrics import Metrics
from ._relay import Relay
from ._share import LoopShare

__all__ = ["BadBind", "HttpFront", "HttpOptions", "parse_bind"]

log = logging.getLogger("stepline")

PACKAGE_ROOT: Final = Path(__file__).resolve().parents[2]
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
        self._socket = _listen(options.host, options.port)
        self.host, self.port = self._socket.getsockname()[:2]
        self._metrics: Metrics | None = None
        self._share = LoopShare()
        self._relay = Relay()
        self._stopped = trio.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- the tap: every event stdout gets, at no more than a line into a buffer while idle ----

    def observe(self, event: Event, line: bytes) -> None:
        self._relay.add(line, 1)
        if self._share.armed:  # only while a request is served: the share's view of the loop
            self._share.observe(event)

    def observe_lines(self, data: bytes, count: int) -> None:
        self._relay.add(data, count)
        if self._share.armed:
            for line in data.splitlines():
                self._share.observe(orjson.loads(line))

    def ready_fields(self) -> dict[str, Any]:
        return {"http": self.url}

    def open(self, executor: Executor) -> Attachment:
        from ._admit import Admission
        from ._app import build_app

        self._metrics = Metrics(executor)
        self._relay.app = build_app(
            executor,
            self._metrics,
            self._share,
            token=self.options.token,
            hook_secret=self.options.hook_secret,
            max_body=self.options.max_body,
        )
        self._relay.admission = Admission(executor, self._share, self._metrics)
        return self

    # -- the attachment ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the front's process, then relay until the events have ended and it has
        exited (it is killed if it does not within the grace period, or if this is cancelled)."""
        process = None
        try:
            ours, theirs = socket.socketpair()
            with theirs:
                process = await _start_process(self._socket, theirs, self.options)
            self._socket.close()  # the front's process accepts; this one never does
            task_status.started()
            async with trio.SocketStream(trio.socket.from_stdlib_socket(ours)) as link:
                await self._relay.run(link, self._share)
            with trio.move_on_after(GRACE + 1):
                await process.wait()
        finally:
            if process is not None and process.returncode is None:
                process.kill()
            self._stopped.set()

    def shutdown(self, mode: ShutdownMode) -> None:
        """Keep answering: status, logs and events still matter while jobs drain; submits are
        refused by the executor itself (``shutting_down``)."""

    async def drain(self) -> None:
        self._relay.close()
        with trio.move_on_after(GRACE + 2):
            await self._stopped.wait()


async def _start_process(
    listening: socket.socket, link: socket.socket, options: HttpOptions
) -> trio.Process:
    """``python -m stepline.web._child`` with the listening socket and its end of the link."""
    fds = (listening.fileno(), link.fileno())
    argv = [sys.executable, "-m", "stepline.web._child", "--listen-fd", str(fds[0])]
    argv += ["--link-fd", str(fds[1]), "--max-body", str(options.max_body)]
    env = dict(os.environ)
    package_root = str(PACKAGE_ROOT)  # the child imports stepline from where this one did
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("STEPLINE_HTTP_TOKEN", None)
    if options.token is not None:
        env["STEPLINE_HTTP_TOKEN"] = options.token
    return await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=fds, env=env
    )


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        sock = socket.create_server(infos[0][4][:2], family=infos[0][0], backlog=128)
    except OSError as exc:
        raise BadBind(f"--http {host}:{port}: {exc.strerror or exc}") from None
    return sock
