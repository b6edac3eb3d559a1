"""The ASGI application: routes, the token guard, errors as JSON, the dashboard's files.

Starlette routes requests (it runs on trio through anyio) in the same event loop as the
executor, so a handler calls the executor's methods directly, between awaits, exactly as the
stdin reader does. The requests come from the front's own process (:mod:`._child`, where h11
parses HTTP: no hand-written parsing), forwarded by :mod:`._relay`; ``GET /events`` is served
there, by :func:`build_events_app`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import orjson
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import CommandError
from ..engine._executor import Executor
from ._api import Api
from ._auth import token_ok
from ._errors import ApiError, error_response
from ._events import EventLog
from ._hooks import Hooks
from ._metrics import CONTENT_TYPE, Metrics
from ._openapi import openapi_document
from ._share import LoopShare
from ._stream import event_stream

__all__ = ["build_app", "build_events_app", "by_method"]

JSON: Final = "application/json"
WRITERS: Final = 8  # event streams writing at once in the front's process

Endpoint = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("stepline")

STATIC = Path(__file__).parent / "static"


class _Guard:
    """Pure ASGI middleware: the bearer token on every request, a count of the answers, and
    the front's turn on the loop (:class:`LoopShare`) before a request is handled.

    Only ``/static/`` is open without the token: the dashboard's script and style sheet, the
    same files the package ships, which a browser fetches without the page's query string.

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which buffers streaming bodies
    and would hold ``GET /events`` back.
    """

    def __init__(
        self, app: ASGIApp, token: str | None, metrics: Metrics | None, share: LoopShare
    ) -> None:
        self._app = app
        self._token = token
        self._metrics = metrics
        self._share = share

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        public = scope["path"].startswith("/static/")  # the dashboard's own files: no data
        if (
            self._token is not None
            and not public
            and not token_ok(HTTPConnection(scope), self._token)
        ):
            refusal = _unauthorized()
            if self._metrics is not None:
                self._metrics.answered(refusal.status_code)
            await refusal(scope, receive, send)
            return
        if self._metrics is None:  # the front's process: nothing to count, no jobs to yield to
            await self._app(scope, receive, send)
            return
        metrics = self._metrics

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.answered(message["status"])
            await send(message)

        await self._share.turn()
        await self._app(scope, receive, counted)


def by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint for a path that takes several methods: a route per method would answer a
    wrong method with an ``Allow`` naming only its own."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


def _unauthorized() -> Response:
    return error_response(
        "unauthorized",
        "this server needs Authorization: Bearer TOKEN",
        headers={"www-authenticate": "Bearer"},
    )


def build_events_app(log_: EventLog, token: str | None) -> ASGIApp:
    """``GET /events`` alone, as the front's own process serves it (beside the forwarding of
    every other request to the executor's process, where :func:`build_app` answers them)."""
    share = LoopShare()  # never held: this process has no jobs to yield to
    writers = trio.Semaphore(WRITERS)

    async def events(request: Request) -> Response:
        return event_stream(request, log_, share, writers)

    app = Starlette(
        routes=[Route("/events", events, methods=["GET"])],
        exception_handlers={ApiError: _api_error, Exception: _internal_error},
    )
    return _Guard(app, token, None, share)


def build_app(
    executor: Executor,
    metrics: Metrics,
    share: LoopShare,
    *,
    token: str | None,
    hook_secret: str | None,
    max_body: int,
) -> ASGIApp:
    """The application for the requests the front's process forwards (``POST /jobs`` is
    decoded there and admitted in batches: ``web/_submits.py``, ``web/_admit.py``)."""
    api = Api(executor, max_body, share)
    hooks = Hooks(executor, hook_secret, max_body, share)
    app = Starlette(
        routes=_routes(api, hooks, metrics, openapi_document(token=token is not None)),
        exception_handlers={
            ApiError: _api_error,
            CommandError: _command_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    return _Guard(app, token, metrics, share)


def _routes(api: Api, hooks: Hooks, metrics: Metrics, openapi: dict[str, Any]) -> list[BaseRoute]:
    """Every route of :func:`build_app`: the API's, the hooks', and the server's own pages."""
    document = orjson.dumps(openapi)

    async def events(request: Request) -> Response:
        """Not reached: the front's process serves ``GET /events`` itself (the route is here
        for the other methods' 405 and for the document)."""
        raise ApiError("unavailable", "the event stream is served by the front's process")

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def dashboard(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return [
        Route("/", dashboard),
        Route("/jobs", by_method(POST=api.submit, GET=api.list_jobs), methods=["GET", "POST"]),
        Route("/jobs/{job}", api.get_job, methods=["GET"]),
        Route("/jobs/{job}/cancel", api.cancel, methods=["POST"]),
        Route("/jobs/{job}/logs", api.logs, methods=["GET"]),
        Route("/jobs/{job}/graph", api.graph, methods=["GET"]),
        Route("/templates/{name}", api.define, methods=["PUT"]),
        Route(
            "/schedules",
            by_method(POST=api.schedule, GET=api.list_schedules),
            methods=["GET", "POST"],
        ),
        Route("/schedules/{schedule}", api.unschedule, methods=["DELETE"]),
        Route("/alerts", api.list_alerts, methods=["GET"]),
        Route("/alerts/{alert}/ack", api.ack, methods=["POST"]),
        Route("/stats", api.stats, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/hooks/{name}", hooks.trigger, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.code, exc.message)


async def _command_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CommandError)
    return error_response(exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:  # with Allow: the methods this path takes (RFC 9110)
        return error_response(
            "method_not_allowed", f"{request.method} is not allowed here", headers=exc.headers
        )
    if exc.status_code == 404:
        return error_response("not_found", f"no such resource: {request.url.path}")
    return JSONResponse({"code": "bad_command", "message": exc.detail}, exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("internal", f"internal error: {type(exc).__name__}: {exc}")
