"""``POST /hooks/{name}``: a webhook that submits template ``name`` with the body as its params.

Only templates defined with ``"hook": true`` answer, so defining a template never exposes it by
accident. With ``--hook-secret`` the request must be signed like GitHub's webhooks
(``X-Stepline-Signature: sha256=HEX``, the HMAC-SHA256 of the raw body), checked before the body
is even parsed.

The body's keys the template does not take (neither in its ``params`` defaults nor used as
``${params.X}``) are left out and named in the reply's ``ignored``, not refused: the sender, not
the template's author, decides a webhook's payload (a GitHub push carries dozens of keys), so
a template takes the few it needs. ``POST /jobs`` with a template stays strict (``invalid_job``
for an unknown parameter): there the caller writes the params and a typo is a mistake.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..engine._executor import Executor
from ..spec._signature import parameters_of
from ._api import parse_json, read_body
from ._auth import SIGNATURE_HEADER, signature_ok
from ._errors import ApiError
from ._share import LoopShare

__all__ = ["Hooks"]


class Hooks:
    def __init__(
        self, executor: Executor, secret: str | None, max_body: int, share: LoopShare
    ) -> None:
        self._executor = executor
        self._secret = secret
        self._max_body = max_body
        self._share = share

    async def trigger(self, request: Request) -> Response:
        name = request.path_params["name"]
        template = self._executor.templates.get(name)
        if template is None or template.get("hook") is not True:
            raise ApiError("unknown_hook", f'no template {name!r} defined with "hook": true')
        raw = await read_body(request, self._max_body)
        signature = request.headers.get(SIGNATURE_HEADER)
        if self._secret is not None and not signature_ok(raw, signature, self._secret):
            raise ApiError("bad_signature", "X-Stepline-Signature is missing or wrong")
        body = parse_json(raw) if raw.strip() else {}  # no body: the template's defaults
        if not isinstance(body, dict):
            raise ApiError("bad_command", "a hook's body must be a JSON object (its params)")
        known = parameters_of(template)
        params = {key: value for key, value in body.items() if key in known}
        with self._share.submitting():
            job = await self._executor.submit(template=name, params=params)
        return JSONResponse({"job": job.id, "ignored": sorted(set(body) - known)}, 202)
