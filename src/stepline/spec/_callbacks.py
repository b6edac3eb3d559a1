"""``on_finish``: the validated callback specs of a job, and the parser that builds them.

A job's ``on_finish`` is a list; each entry has exactly one kind key plus options::

    {"notify": "text"}                                   a `notification` event
    {"alert": "text"}                                    an `alert` that stays open until acked
    {"webhook": URL, "headers": {..}, "payload": {..},   an HTTP request with the job's outcome
     "method": "POST", "timeout": 10, "retry": {..}}
    {"run": [argv] | "shell line", "env", "cwd",         a subprocess fed the `finished` event
     "grace", "timeout"}

and every entry may carry ``when``: ``success`` (state ``succeeded``), ``failure`` (any other final
state: ``failed``, ``cancelled``, ``timed_out``) or ``always`` (the default).

Parsing reads every field through the job's :class:`~stepline.spec._fields.Fields`: callbacks are
part of the job, so ``${params.NAME}`` is substituted in them exactly as in steps, the same strict
type checks apply, and every message names its path (``on_finish[1].webhook``); a ``run``
callback's options go through the ``run`` step's own parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeAlias, cast

from attrs import field, frozen

from .._errors import InvalidJob
from ._http import check_url, parse_headers
from ._model import NO_MODIFIERS, Retry, Run
from ._steps import parse_run

if TYPE_CHECKING:
    from ._fields import Fields

__all__ = [
    "Alert",
    "Callback",
    "Notify",
    "RunCallback",
    "Webhook",
    "parse_on_finish",
]

When: TypeAlias = Literal["success", "failure", "always"]

WEBHOOK_TIMEOUT: Final = 10.0
"""Seconds one webhook attempt may take, connection to response headers, unless ``timeout``."""

WEBHOOK_RETRY: Final = Retry(attempts=3, backoff=1.0, factor=2.0)
"""Default webhook retries on connection errors, 429 and 5xx: 3 tries, 1 s then 2 s apart."""

_WHEN: Final = ("success", "failure", "always")
_METHODS: Final = ("POST", "PUT", "PATCH")
_OPTIONS: Final[Mapping[str, frozenset[str]]] = {
    "notify": frozenset(("notify", "when")),
    "alert": frozenset(("alert", "when")),
    "webhook": frozenset(("webhook", "when", "headers", "payload", "method", "timeout", "retry")),
    "run": frozenset(("run", "when", "env", "cwd", "grace", "timeout")),
}


@frozen(kw_only=True)
class _CallbackBase:
    index: int  # position in the job's on_finish list: the `callback` field of its events
    path: str
    when: When = "always"

    def applies(self, state: str) -> bool:
        """Whether this callback runs for a job that ended in ``state`` (a final state)."""
        if self.when == "always":
            return True
        return (state == "succeeded") == (self.when == "success")


@frozen(kw_only=True)
class Notify(_CallbackBase):
    kind: ClassVar[str] = "notify"  # the `kind` of its `callback` events
    text: str


@frozen(kw_only=True)
class Alert(_CallbackBase):
    kind: ClassVar[str] = "alert"
    text: str


@frozen(kw_only=True)
class Webhook(_CallbackBase):
    kind: ClassVar[str] = "webhook"
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(factory=dict)
    payload: Mapping[str, Any] = field(factory=dict)
    timeout: float = WEBHOOK_TIMEOUT
    retry: Retry = WEBHOOK_RETRY


@frozen(kw_only=True)
class RunCallback(_CallbackBase):
    """A custom callback: ``run`` holds argv, env, cwd and grace exactly as a ``run`` step."""

    kind: ClassVar[str] = "run"
    run: Run
    timeout: float | None = None


Callback: TypeAlias = Notify | Alert | Webhook | RunCallback


def parse_on_finish(v: Fields, raw: object, base: str) -> tuple[Callback, ...]:
    """The job's ``on_finish`` list (at ``base``), validated and substituted."""
    key = "on_finish"
    value = v.resolve(raw, base, key)
    if v.lenient(value):
        return ()  # define time: given by a parameter that has no value yet
    if type(value) is not list:
        raise InvalidJob(_at(base, key), f"expected a list of callbacks, got {_kind(value)}")
    check = v if value is raw else v.literal
    prefix = _at(base, key)
    return tuple([_callback(check, item, f"{prefix}[{i}]", i) for i, item in enumerate(value)])


def _callback(v: Fields, raw: object, path: str, index: int) -> Callback:
    if type(raw) is not dict:
        raise InvalidJob(path, f"a callback must be an object, got {_kind(raw)}")
    kinds = [k for k in raw if k in _OPTIONS]
    if len(kinds) != 1:
        found = f"more than one: {', '.join(map(repr, kinds))}" if kinds else "none given"
        raise InvalidJob(path, f"a callback needs one of notify, alert, webhook, run ({found})")
    kind = kinds[0]
    for k in raw:
        if k not in _OPTIONS[kind]:
            raise InvalidJob(path, f"unknown key {k!r} for a {kind} callback")
    when = _when(v, raw, path)
    return _PARSERS[kind](v, raw, path, index, when)


def _when(v: Fields, raw: dict[str, Any], path: str) -> When:
    if "when" not in raw:
        return "always"
    when = v.string(raw["when"], path, "when")
    if when not in _WHEN and not v.lenient(when):
        raise InvalidJob(_at(path, "when"), f"expected one of {', '.join(_WHEN)}, got {when!r}")
    return cast(When, when)


def _notify(v: Fields, raw: dict[str, Any], path: str, index: int, when: When) -> Callback:
    text = v.string(raw["notify"], path, "notify")
    return Notify(index=index, path=path, when=when, text=text)


def _alert(v: Fields, raw: dict[str, Any], path: str, index: int, when: When) -> Callback:
    text = v.string(raw["alert"], path, "alert")
    return Alert(index=index, path=path, when=when, text=text)


def _webhook(v: Fields, raw: dict[str, Any], path: str, index: int, when: When) -> Callback:
    url = check_url(v, v.string(raw["webhook"], path, "webhook"), path, "webhook")
    method = v.string(raw["method"], path, "method").upper() if "method" in raw else "POST"
    if method not in _METHODS and not v.lenient(method):
        allowed = ", ".join(_METHODS)
        raise InvalidJob(_at(path, "method"), f"expected one of {allowed}, got {method!r}")
    return Webhook(
        index=index,
        path=path,
        when=when,
        url=url,
        method=method,
        headers=parse_headers(v, raw["headers"], path) if "headers" in raw else {},
        payload=_payload(v, raw["payload"], path) if "payload" in raw else {},
        timeout=_positive(v, raw["timeout"], path) if "timeout" in raw else WEBHOOK_TIMEOUT,
        retry=v.retry(raw["retry"], path, "retry") if "retry" in raw else WEBHOOK_RETRY,
    )


def _run(v: Fields, raw: dict[str, Any], path: str, index: int, when: When) -> Callback:
    """The ``run`` options are parsed by the ``run`` step's own parser: same rules, same paths."""
    step_keys: dict[str, Any] = {k: raw[k] for k in ("run", "env", "cwd", "grace") if k in raw}
    step = parse_run(v, step_keys, path, 0, NO_MODIFIERS)
    timeout = _positive(v, raw["timeout"], path) if "timeout" in raw else None
    return RunCallback(index=index, path=path, when=when, run=cast(Run, step), timeout=timeout)


_PARSERS: Final = {"notify": _notify, "alert": _alert, "webhook": _webhook, "run": _run}


def _payload(v: Fields, raw: object, path: str) -> dict[str, Any]:
    value = v.json_field(raw, path, "payload")
    if type(value) is dict:
        return value
    if v.lenient(value):
        return {}
    raise InvalidJob(_at(path, "payload"), f"expected an object, got {_kind(value)}")


def _positive(v: Fields, raw: object, path: str) -> float:
    """A ``timeout``: a finite number > 0 (0 would make every attempt fail at once)."""
    value = v.number(raw, path, "timeout")
    if value == 0 and not v.lenient(value):
        raise InvalidJob(_at(path, "timeout"), "must be greater than 0")
    return value


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
