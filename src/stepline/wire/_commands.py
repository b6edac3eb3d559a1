"""Commands: the closed set of messages a driver may send, and the decoder for them.

Each ``op`` of the protocol is one frozen attrs class. :func:`decode_command` turns one line into
``(command, id)`` or raises a :class:`~stepline._errors.CommandError` carrying the ``id`` it could
recover, so even a refused command's ``error`` event echoes it. A plain ``submit``, the hot path,
is decoded without the classes by :mod:`stepline.wire._plain`: ``stepline serve`` imports this
module at the first line that is not one.

Structuring uses cattrs with strict hooks: default cattrs coerces silently (``"5"`` → 5,
``True`` → 1.0, ``"echo"`` → ``['e','c','h','o']``), which would turn a driver's mistake into a
surprise instead of an error. Job specs travel as raw JSON (``Any``) and are validated separately
by :mod:`stepline.spec._validate`, which knows step paths.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args, get_origin

import orjson
from attrs import frozen

from .._errors import BadCommand, BadJson, Unavailable
from .._lazy import loading
from ._events import RequestId
from ._plain import PlainSubmit, decode_plain_submit, plain_submit, request_id_of

if TYPE_CHECKING:
    import cattrs

__all__ = [
    "Ack",
    "Cancel",
    "Command",
    "Define",
    "Logs",
    "Ping",
    "PlainSubmit",
    "Schedule",
    "Shutdown",
    "Stats",
    "Status",
    "Submit",
    "Unschedule",
    "decode_command",
    "decode_plain_submit",
]


@frozen
class Submit:
    job: Any = None
    template: str | None = None
    params: dict[str, Any] | None = None
    name: str | None = None


@frozen
class Cancel:
    job: str
    force: bool = False
    grace: float | None = None


@frozen
class Status:
    job: str | None = None
    state: Any = None  # a state or a list of states: checked by the engine's StatusFilter
    name: str | None = None
    since: float | None = None
    limit: int | None = None


@frozen
class Logs:
    job: str
    after: int = 0


@frozen
class Define:
    name: str
    job: Any


@frozen
class Schedule:
    cron: str | None = None
    every: float | None = None
    job: Any = None
    template: str | None = None
    params: dict[str, Any] | None = None
    name: str | None = None
    tz: str | None = None
    overlap: Literal["skip", "allow"] = "skip"


@frozen
class Unschedule:
    schedule: str


@frozen
class Ack:
    alert: str


@frozen
class Stats:
    pass


@frozen
class Ping:
    pass


@frozen
class Shutdown:
    mode: Literal["drain", "cancel"] = "drain"


Command: TypeAlias = (
    Submit | Cancel | Status | Logs | Define | Schedule | Unschedule | Ack | Stats | Ping | Shutdown
)

OPS: dict[str, type[Command]] = {
    "submit": Submit,
    "cancel": Cancel,
    "status": Status,
    "logs": Logs,
    "define": Define,
    "schedule": Schedule,
    "unschedule": Unschedule,
    "ack": Ack,
    "stats": Stats,
    "ping": Ping,
    "shutdown": Shutdown,
}


class CommandRefused(Exception):
    """A line that is not a valid command, with the ``id`` to echo (``None`` if unknown)."""

    def __init__(self, error: BadJson | BadCommand | Unavailable, request_id: RequestId) -> None:
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id


def decode_command(line: bytes) -> tuple[Command, RequestId]:
    """Parse one line into a command and its ``id``; raises :class:`CommandRefused`."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CommandRefused(BadJson(f"not valid JSON: {exc}"), None) from None
    if not isinstance(obj, dict):
        raise CommandRefused(BadJson(f"expected a JSON object, got {_json_type(obj)}"), None)
    request_id = request_id_of(obj)
    plain = plain_submit(obj)
    if plain is not None:
        return Submit(job=plain.job, name=plain.name), request_id
    try:
        return _structure(obj), request_id
    except (BadCommand, Unavailable) as exc:
        raise CommandRefused(exc, request_id) from None


def _structure(obj: dict[str, Any]) -> Command:
    with loading("the command decoder"):
        import cattrs  # lazily: see _converter

    fields = dict(obj)
    op = fields.pop("op", None)
    rid = fields.pop("id", None)
    if rid is not None and request_id_of({"id": rid}) is None:
        raise BadCommand(f"'id' must be a string or an integer, got {_json_type(rid)}")
    if op is None:
        raise BadCommand("missing 'op'")
    cls = OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise BadCommand(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    with loading("the command decoder"):
        converter = _converter()
    try:
        return converter.structure(fields, cls)
    except cattrs.ClassValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, path=op, format_exception=_explain))
        raise BadCommand(problems) from None


def _explain(exc: BaseException, type_: Any) -> str:
    """One field's problem in a driver's words (cattrs' defaults name Python types)."""
    import cattrs

    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required field missing"
    if get_origin(type_) is Literal:
        return f"expected one of {', '.join(map(repr, get_args(type_)))}"
    return str(exc)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


# -- a strict converter ------------------------------------------------------------------------


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected string, got {_json_type(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected number, got {_json_type(value)}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite, non-negative number, got {value}")
    return float(value)


def _strict_count(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a whole number, got {_json_type(value)}")
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_json_type(value)}")
    return value


def _strict_object(value: Any, _: type) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected object, got {_json_type(value)}")
    return value


@functools.cache
def _converter() -> cattrs.Converter:
    """Built on first use: plain submits never need it, and importing cattrs is a visible share
    of start-up (NOTES.md, Performance)."""
    import cattrs

    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(int, _strict_count)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook_func(lambda t: t == dict[str, Any], _strict_object)
    converter.register_structure_hook_func(lambda t: t is Any, lambda value, _: value)
    return converter
