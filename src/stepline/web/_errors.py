"""Errors as HTTP answers: ``{"code", "message"}`` with the protocol's codes, and a fitting status.

Every refusal the executor raises is a :class:`~stepline._errors.CommandError` with a wire code;
the front answers it with the same code and message a stdin driver would get, under the HTTP
status a generic client expects (404 for an unknown id, 409 for a state conflict, 503 while the
executor cannot take work). Errors that exist only over HTTP (a missing token, a bad signature)
are :class:`ApiError` with codes of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from starlette.responses import JSONResponse

from .._errors import CommandError

__all__ = ["STATUS_OF", "ApiError", "error_response", "status_of"]

STATUS_OF: Final[dict[str, int]] = {
    "bad_json": 400,
    "bad_command": 400,
    "line_too_long": 413,
    "invalid_job": 422,
    "unknown_job": 404,
    "unknown_template": 404,
    "unknown_alert": 404,
    "unknown_schedule": 404,
    "unknown_hook": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "already_finished": 409,
    "already_acked": 409,
    "unauthorized": 401,
    "bad_signature": 401,
    "queue_full": 503,
    "shutting_down": 503,
    "store_failed": 500,
    "unavailable": 503,  # a feature did not load (no file descriptor left, say): try again
    "internal": 500,
}


class ApiError(Exception):
    """A refusal answered as ``{"code", "message"}``: HTTP-only codes, or a command's own."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def of(cls, exc: CommandError) -> ApiError:
        return cls(exc.code, exc.message)


def status_of(code: str) -> int:
    return STATUS_OF.get(code, 400)


def error_response(
    code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_of(code), headers=headers)
