"""The REST endpoints: the protocol's commands as resources, JSON in and out.

Each handler does what the stdin op of the same meaning does, on the same executor, with the
same checks: a submit body is decoded by the protocol's own command decoder (strict types,
unknown fields refused), so ``POST /jobs`` and a ``submit`` line accept and refuse exactly the
same things. Replies go to the HTTP client only; the job events they cause (``accepted``,
``cancelling``, ``finished``, ...) still go to stdout and to ``GET /events``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine._executor import Executor
from ..engine._jobs import StatusFilter
from ..triggers._attach import Triggers
from ..wire._commands import CommandRefused, Schedule, Submit, decode_command
from ..wire._events import reply
from ._errors import ApiError
from ._graphs import job_graph
from ._share import LoopShare

__all__ = ["Api", "json_body", "parse_json", "read_body"]

_DEFAULT_LIMIT = 100


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused past ``max_bytes`` (``--max-line``, as for a stdin line)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("line_too_long", f"request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """The body's JSON value; an empty body is ``None``."""
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError("bad_json", f"request body is not JSON: {exc}") from None


async def json_body(request: Request, max_bytes: int) -> Any:
    return parse_json(await read_body(request, max_bytes))


def decode_op(op: str, body: Any) -> Any:
    """``body`` as the protocol command ``op`` (its fields, strictly checked)."""
    if not isinstance(body, dict):
        raise ApiError("bad_command", "the request body must be a JSON object")
    if "op" in body or "id" in body:
        raise ApiError("bad_command", "'op' and 'id' are stdin fields; the URL says what to do")
    try:
        command, _ = decode_command(orjson.dumps({**body, "op": op}))
    except CommandRefused as refused:
        raise ApiError.of(refused.error) from None
    return command


class Api:
    """The handlers, bound to one executor."""

    def __init__(self, executor: Executor, max_body: int, share: LoopShare) -> None:
        self.executor = executor
        self.max_body = max_body
        self.share = share

    async def submit(self, request: Request) -> Response:
        job = await self.submit_body(await read_body(request, self.max_body))
        return JSONResponse({"job": job}, 202)

    async def submit_body(self, raw: bytes) -> str:
        """``POST /jobs`` from its raw body to the job's id: what :meth:`submit` does, callable
        without a framework's request (the relay's shortcut for the busiest endpoint)."""
        if len(raw) > self.max_body:
            raise ApiError("line_too_long", f"request body exceeds {self.max_body} bytes")
        cmd: Submit = decode_op("submit", parse_json(raw))
        with self.share.submitting():
            job = await self.executor.submit(
                cmd.job, template=cmd.template, params=cmd.params, name=cmd.name
            )
        return job.id

    async def list_jobs(self, request: Request) -> Response:
        """The engine's ``status`` filters (``state`` repeatable, ``name``, ``since``), always
        with a limit (100 unless given), so records come most recent first; a page at a time:
        ``next`` is the cursor for the older ones (``before=``), null when there are none."""
        query = request.query_params
        limit = _int_param(query.get("limit"), "limit", _DEFAULT_LIMIT)
        select = StatusFilter.of(
            query.getlist("state") or None,
            query.get("name"),
            _float_param(query.get("since"), "since"),
            limit + 1,  # one more than asked: whether there is a next page
            before=query.get("before"),
        )
        records = self.executor.table.records(None, select)
        more = len(records) > limit
        del records[limit:]
        cursor = records[-1]["job"] if more and records else None
        return JSONResponse({"jobs": records, "next": cursor})

    async def get_job(self, request: Request) -> Response:
        (record,) = self.executor.table.records(request.path_params["job"])
        return JSONResponse(record)

    async def cancel(self, request: Request) -> Response:
        job = self.executor.cancel(request.path_params["job"])
        return JSONResponse({"job": job.id, "state": job.state.value}, 202)

    async def logs(self, request: Request) -> Response:
        after = _int_param(request.query_params.get("after"), "after", 0)
        return JSONResponse(self.executor.logs(request.path_params["job"], after))

    async def graph(self, request: Request) -> Response:
        job = self.executor.table.get(request.path_params["job"])
        return JSONResponse(job_graph(job.spec))

    async def define(self, request: Request) -> Response:
        body = await json_body(request, self.max_body)
        name = request.path_params["name"]
        self.executor.define(name, body)
        await self.executor.sync_state()  # with --state the template survives a restart
        return JSONResponse({"template": name})

    async def schedule(self, request: Request) -> Response:
        body = await json_body(request, self.max_body)
        cmd: Schedule = decode_op("schedule", body)
        entry = Triggers.of(self.executor).schedules.add(
            cron=cmd.cron,
            every=cmd.every,
            tz=cmd.tz,
            job=cmd.job,
            template=cmd.template,
            params=cmd.params,
            name=cmd.name,
            overlap=cmd.overlap,
        )
        return JSONResponse({"schedule": entry.id, "next": entry.next()}, 201)

    async def unschedule(self, request: Request) -> Response:
        entry = Triggers.of(self.executor).schedules.remove(request.path_params["schedule"])
        return JSONResponse({"schedule": entry.id})

    async def list_schedules(self, request: Request) -> Response:
        return JSONResponse({"schedules": Triggers.of(self.executor).status()["schedules"]})

    async def list_alerts(self, request: Request) -> Response:
        return JSONResponse({"alerts": Triggers.of(self.executor).status()["alerts"]})

    async def ack(self, request: Request) -> Response:
        """Acked here, and said on stdout too (``acked`` without an ``id``, as no stdin command
        asked): a driver that saw the ``alert`` events learns they stop, and why."""
        alerts = Triggers.of(self.executor).alerts  # in memory, or a cluster's database
        alert, job = await alerts.close(request.path_params["alert"])
        self.executor.outbox.emit(reply("acked", None, alert=alert, job=job))
        return JSONResponse({"alert": alert, "job": job})

    async def stats(self, request: Request) -> Response:
        stats = {**self.executor.stats(), **Triggers.of(self.executor).stats()}
        return JSONResponse(stats)

    async def healthz(self, request: Request) -> Response:
        state = self.executor.state.value
        return JSONResponse({"ok": state == "running", "state": state}, _health_status(state))


def _health_status(state: str) -> int:
    """200 while jobs are taken; 503 once draining, so a balancer stops sending work."""
    return 200 if state == "running" else 503


def _int_param(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError("bad_command", f"{name} must be an integer, got {text!r}") from None
    if value < 0:
        raise ApiError("bad_command", f"{name} must not be negative, got {value}")
    return value


def _float_param(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError("bad_command", f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ApiError("bad_command", f"{name} must be a finite number, got {text!r}")
    return value
