"""HTTP: the ``http`` step, webhook delivery, and the one client they share.

The step's form (``url``, ``method``, ``headers``, ``json``/``body``, ``expect``) is checked and
encoded at submit time by :mod:`stepline.spec._http`; this module sends the request.

* The output is ``{"status", "headers", "body"}``: ``body`` is the decoded JSON value when the
  response says it is JSON (``application/json`` or ``+json``) and parses, otherwise text (UTF-8
  unless the response names a charset, invalid bytes replaced). At most :data:`BODY_CAP` bytes
  are kept (the rest is read and dropped); ``truncated: true`` says the body was cut (a cut
  body is always text).
* A status outside ``expect`` (default: any 2xx) fails with type ``http_status`` (``status`` and
  the first 4 KiB of the body in the error); a connection error, a protocol error or too many
  redirects fails with type ``http_error``. Redirects are followed.
* A JSON body is outside data held to the limits of a ``value`` (:mod:`stepline.spec._outside`):
  one nested deeper than 64 levels fails with type ``invalid_output``.
* There is no built-in timeout: like a ``run`` step, the step's ``timeout`` modifier bounds it,
  and ``retry`` retries either failure.

Why httpx: it runs natively on trio (through anyio), so a request is just another cancellable
``await`` in the step tree — a job cancel or timeout interrupts it at once — and it pools
connections. One :class:`~stepline.engine._http_client.HttpClient` per executor holds the
pool; it is created on first use, inside the running trio loop, and closed when the executor
stops. httpx itself is imported on first use too: it is a tenth of a second of start-up that a
``stepline serve`` never making a request should not pay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import trio

from .._errors import StepFailed, Unavailable
from .._lazy import loading
from ..spec._model import Http
from ..spec._outside import INVALID_OUTPUT, too_deep
from ._http_client import HOST_CONNECTIONS, POOL_WAIT, HostBusy, HttpClient

if TYPE_CHECKING:
    import httpx

    from ..spec._callbacks import Webhook
    from ._interpret import StepContext

__all__ = [
    "BODY_CAP",
    "HOST_CONNECTIONS",
    "POOL_WAIT",
    "HostBusy",
    "HttpClient",
    "Progress",
    "WebhookResult",
    "deliver_webhook",
    "run_http",
]

BODY_CAP: Final = 1 << 20
"""Bytes of a response body an ``http`` step keeps (like a ``run`` step's output cap)."""

_ERROR_BODY: Final = 4096


# -- the step ----------------------------------------------------------------------------------


async def run_http(step: Http, ctx: StepContext) -> dict[str, Any]:
    """Send the request; the output is ``{status, headers, body}`` (see the module docstring)."""
    http = ctx.services.http
    if http is not None:
        return await _request(step, http)
    holder = HttpClient()  # a StepContext built without the executor's client (tests)
    try:
        return await _request(step, holder)
    finally:
        with trio.CancelScope(shield=True):
            await holder.aclose()


async def _request(step: Http, http: HttpClient) -> dict[str, Any]:
    try:
        with loading("the HTTP client"):
            import httpx
        client = await http.get()
    except Unavailable as exc:
        raise StepFailed(Unavailable.code, exc.message, step.path, step.mods.name) from None
    try:
        async with (
            http.slot(step.url, bounded=step.mods.timeout is None),
            client.stream(
                step.method,
                step.url,
                headers=dict(step.headers),
                content=step.content,
                follow_redirects=True,
            ) as response,
        ):
            raw, truncated = await _read_capped(response, BODY_CAP)
    except (httpx.HTTPError, httpx.InvalidURL, HostBusy, UnicodeError) as exc:
        # UnicodeError: a host name the idna codecs refuse (an "xn--" label that does not
        # decode), found only as the request is made
        message = f"{step.method} {step.url}: {_describe(exc)}"
        raise StepFailed("http_error", message, step.path, step.mods.name) from None
    output = _output(response, raw, truncated)
    if not _expected(response.status_code, step.expect):
        raise _status_failure(step, response.status_code, raw)
    problem = too_deep(output["body"])  # outside data: the limits of `value` apply
    if problem is not None:
        message = f"{step.method} {step.url}: the response body is {problem}"
        raise StepFailed(INVALID_OUTPUT, message, step.path, step.mods.name)
    return output


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body; the rest is read and dropped, like a ``run`` step's
    output (stopping early would leave httpx's async generators unfinished; the step's
    ``timeout`` bounds an endless body)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size <= cap:
            chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:cap], size > cap


def _output(response: httpx.Response, raw: bytes, truncated: bool) -> dict[str, Any]:
    output: dict[str, Any] = {
        "status": response.status_code,
        "headers": dict(response.headers.items()),
        "body": _body(response, raw, truncated),
    }
    if truncated:
        output["truncated"] = True
    return output


def _body(response: httpx.Response, raw: bytes, truncated: bool) -> Any:
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not truncated and (kind == "application/json" or kind.endswith("+json")):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # it said JSON but is not: hand over the text
    return raw.decode(response.encoding or "utf-8", errors="replace")


def _expected(status: int, expect: tuple[int, ...] | None) -> bool:
    return 200 <= status < 300 if expect is None else status in expect


def _status_failure(step: Http, status: int, raw: bytes) -> StepFailed:
    message = f"{step.method} {step.url} answered {status}"
    extra = {"status": status, "body": raw[:_ERROR_BODY].decode("utf-8", errors="replace")}
    return StepFailed("http_status", message, step.path, step.mods.name, extra)


def _describe(exc: BaseException) -> str:
    text = str(exc) or "no details"
    return f"{type(exc).__name__}: {text}"


# -- webhooks ----------------------------------------------------------------------------------


@attrs.frozen
class WebhookResult:
    """How a webhook delivery ended: ``status`` is the last HTTP status (None: no response)."""

    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


@attrs.define
class Progress:
    """How far a delivery got, kept up to date as it goes: a delivery cancelled mid-way returns
    no result, yet its report must still count the attempts it made."""

    attempts: int = 0
    status: int | None = None  # the last HTTP status received


async def deliver_webhook(
    http: HttpClient, hook: Webhook, body: Mapping[str, Any], progress: Progress | None = None
) -> WebhookResult:
    """POST ``body`` as JSON, retrying connection errors, timeouts, 429 and 5xx with backoff.

    Each attempt is bounded by ``hook.timeout`` (the whole exchange, up to the response
    headers: the response body is never read). A 2xx is success; any other status that is not
    retried (3xx, 4xx) ends the delivery at once. ``progress`` counts an attempt as it starts.
    """
    progress = progress if progress is not None else Progress()
    content = orjson.dumps(body, default=str)
    headers = dict(hook.headers)
    if not any(name.lower() == "content-type" for name in headers):
        headers["content-type"] = "application/json"
    result = WebhookResult(ok=False, attempts=0)
    for attempt in range(1, hook.retry.attempts + 1):
        if attempt > 1:
            await trio.sleep(hook.retry.delay_before(attempt))
        progress.attempts = attempt
        result, retry = await _attempt(http, hook, content, headers, attempt)
        progress.status = result.status
        if not retry:
            break
    return result


async def _attempt(
    http: HttpClient,
    hook: Webhook,
    content: bytes,
    headers: dict[str, str],
    attempt: int,
) -> tuple[WebhookResult, bool]:
    """One try: its result, and whether another try may help."""
    with trio.move_on_after(hook.timeout):  # bounds the wait for a host slot too
        try:
            with loading("the HTTP client"):
                import httpx
            client = await http.get()
        except Unavailable as exc:  # it may load for a later try
            return WebhookResult(False, attempt, None, exc.message), True
        try:
            async with (
                http.slot(hook.url, bounded=False),
                client.stream(hook.method, hook.url, content=content, headers=headers) as response,
            ):
                status = response.status_code
        except httpx.TransportError as exc:
            return WebhookResult(False, attempt, None, _describe(exc)), True
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:  # as in _request
            return WebhookResult(False, attempt, None, _describe(exc)), False
        if 200 <= status < 300:
            return WebhookResult(True, attempt, status), False
        retry = status == 429 or status >= 500
        return WebhookResult(False, attempt, status, f"HTTP {status}"), retry
    message = f"no response within {hook.timeout:g}s"
    return WebhookResult(False, attempt, None, message), True
