"""A real HTTP server on 127.0.0.1 for tests: scripted answers, recorded requests.

It runs ``http.server`` in a background thread, so stepline talks to it over a real socket with
its real client. Each path answers from a script: a list of :class:`Answer` used in order (the
last one repeats), so "503, 503, then 200" is ``[Answer(503), Answer(503), Answer(200)]``.

Slow answers wait on a ``threading.Event`` that is set when the server closes, so a test never
leaves a handler thread sleeping behind it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs


@attrs.frozen
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless `text` is given
    text: str | None = None
    delay: float = 0.0  # seconds before answering (cut short when the server closes)
    content_type: str | None = None  # overrides the type implied by `body` / `text`
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpServer:
    """``with HttpServer() as server: server.url("/hook")``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.scripts: dict[str, list[Answer]] = {}
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> HttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def script(self, path: str, *answers: Answer) -> str:
        """Answer ``path`` with these, in order (the last repeats); returns its URL."""
        self.scripts[path] = list(answers)
        return self.url(path)

    def received(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    # -- called from handler threads -------------------------------------------------------

    def answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            script = self.scripts.get(request.path, [Answer(404, {"error": "no such path"})])
            return script.pop(0) if len(script) > 1 else script[0]

    def request_done(self) -> None:
        with self._lock:
            self.active -= 1

    def delay(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-request is expected in these tests


def _handler_for(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = server.answer(Request(self.command, self.path, headers, body))
            try:
                server.delay(answer.delay)
                self._reply(answer)
            except OSError:
                pass  # the client gave up (a timeout or a cancel): nothing to tell it
            finally:
                server.request_done()

        def _reply(self, answer: Answer) -> None:
            if answer.text is not None:
                data, kind = answer.text.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(answer.body).encode(), "application/json"
            kind = answer.content_type or kind
            self.send_response(answer.status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


def statuses(*codes: int) -> Sequence[Answer]:
    return [Answer(code, {"status": code}) for code in codes]


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers: a dead endpoint that looks alive.

    ``accepted`` counts the connections taken; every one is held open until the server closes.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self._listener.settimeout(0.05)
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def accepted(self) -> int:
        return len(self._held)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}{path}"

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(conn)
