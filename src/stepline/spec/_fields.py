"""Typed fields of a job, with ``${...}`` substituted: the helpers every parser of ``spec/`` uses.

A parser (steps, tasks, callbacks, ``http``, ``limits``, ``matrix``) reads each field of its raw
JSON through one :class:`Fields` object, which does three things at once:

* it substitutes ``${params.NAME}`` and ``${matrix.NAME}`` (and checks ``${job...}`` /
  ``${tasks...}`` against its :class:`~stepline.spec._refs.Scope`) in the field, then type-checks
  the result, so ``{"sleep": "${params.d}"}`` is a sleep of ``d`` seconds;
* it checks types strictly (a bool is not a number, ``2.5`` is not an int, numbers are finite),
  so the engine can trust a spec without re-checking anything;
* every error is an :class:`~stepline.InvalidJob` naming the field's path (``steps[2].run``).

The public methods, each taking the raw value, the path of the object holding it and the key:

==================  ==========================================================================
``resolve``         the raw value with its references substituted (no type check)
``string``          a string (``no_nul=True`` where the OS would refuse NUL later)
``number``          a finite number >= 0, ints accepted (durations, factors)
``count``           an int of at least ``minimum``
``flag``            true or false (None when the key is absent)
``json_field``      any JSON data: substituted, depth-capped, encodable (``value``, ``with``)
``env``             an object of environment variables
``retry``           a ``retry`` object
``limits``          a ``limits`` object (:mod:`stepline.spec._limits`)
``runner``          ``local`` or ``sandbox``
==================  ==========================================================================

At define time (a template, whose parameters have no values yet) a typed field may still hold one
unresolved ``${params.X}``: :meth:`Fields.lenient` says so, and a parser then accepts the
placeholder instead of checking it. :meth:`Fields.deferred` likewise says a number is one
``${tasks...}`` reference, known only when its task runs.

Substituted values are data, not templates: a value that came from a parameter is type-checked
but never substituted again (:attr:`Fields.literal` checks without substituting), so a parameter
whose text happens to contain ``${params.x}`` cannot inject anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Self, cast

import orjson

from .._errors import InvalidJob
from ._inherit import NOTHING_INHERITED, Inherited
from ._limits import NO_LIMITS, Limits, parse_limits, parse_runner
from ._model import Retry
from ._refs import RefProblem
from ._text import at, describe, describe_type, key_suffix, number_text, show_key

if TYPE_CHECKING:
    from ._refs import Scope

__all__ = ["EMPTY", "MAX_JSON_DEPTH", "MISSING", "Fields", "NeedsScope", "without_nul"]

MAX_JSON_DEPTH: Final = 64
"""Lists and objects inside a ``value``, ``with`` or parameter may nest this many levels."""

MISSING: Final = object()
"""An absent key, where None would be a value."""

EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
"""No parameters (shared: never written)."""

_RETRY_KEYS: Final = frozenset(("attempts", "backoff", "factor"))

_INT_MIN: Final = -(2**63)  # the range orjson can encode: int64 and uint64
_INT_MAX: Final = 2**64 - 1
_BIG: Final = 2**1000  # beyond this an int does not convert to a float

_NAME: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_WHOLE: Final = re.compile(rf"\$\{{(params|matrix)\.({_NAME})\}}")
_RUNTIME: Final = r"\$\{(?:tasks|job)\.[^}]*\}"  # ${tasks...}, ${job...}: see _refs.py
_RUNTIME_WHOLE: Final = re.compile(_RUNTIME)
_TOKEN: Final = re.compile(rf"\$\$\{{|\$\{{(params|matrix)\.({_NAME})\}}|({_RUNTIME})")


class _Problem(Exception):
    """A problem found below a field: inside JSON data, or while substituting a string.

    It collects the path suffix (``[3].key``) on its way up, so the JSON walker never builds a
    path string unless something is wrong; the field that started the walk turns it into an
    :class:`InvalidJob` with :meth:`at`.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.where: list[str] = []

    def at(self, path: str) -> InvalidJob:
        return InvalidJob(path + "".join(reversed(self.where)), self.problem)


class NeedsScope(Exception):
    """A ``${job...}``/``${tasks...}`` reference met by a validator without a :class:`Scope`.

    The root validator starts without one, so the common job (no such reference) never pays
    for it; :func:`~stepline.spec._validate.validate_job` catches this and validates again with
    a scope (_refs.py).
    """


def without_nul(s: str, path: str, key: str) -> str:
    """Strings handed to the OS (argv, env, cwd) cannot hold NUL: refuse it now, with a path."""
    if "\0" in s:
        raise InvalidJob(at(path, key), "must not contain a NUL character")
    return s


class Fields:
    """The typed fields of one job, read with that job's effective parameters.

    Each job (the submitted one, and each expanded template) gets its own, because parameters
    are per job. ``chain`` is the list of templates being expanded, to catch cycles. ``subst`` is
    off in the :attr:`literal` twin used for values that came out of a parameter. ``refs`` says
    what ``${job...}`` and ``${tasks...}`` mean here (see :mod:`stepline.spec._refs`);
    ``inherited`` holds the ``env``, ``cwd`` and matrix values from around (_inherit.py).
    """

    __slots__ = (
        *("_literal", "chain", "inherited", "params", "refs", "subst", "templates"),
        "unresolved",
    )

    def __init__(
        self,
        params: Mapping[str, Any],
        templates: Mapping[str, Mapping[str, Any]] | None,
        unresolved: bool,
        chain: tuple[str, ...],
        subst: bool = True,
        refs: Scope | None = None,
        inherited: Inherited = NOTHING_INHERITED,
    ) -> None:
        self.params = params
        self.templates = templates
        self.unresolved = unresolved
        self.chain = chain
        self.subst = subst
        self.refs = refs
        self.inherited = inherited
        self._literal: Self | None = None

    @property
    def literal(self) -> Self:
        """The twin that checks without substituting: for data that came from a parameter."""
        if self._literal is None:
            args = (self.params, self.templates, self.unresolved, self.chain)
            self._literal = type(self)(*args, subst=False, refs=self.refs, inherited=self.inherited)
        return self._literal

    def for_job(self, params: Mapping[str, Any], chain: tuple[str, ...]) -> Self:
        """The fields of a job with these params (``self`` when nothing differs: hot path)."""
        if params is self.params and chain is self.chain and self.subst:
            return self
        inherited = self.inherited.for_template()
        args = (params, self.templates, self.unresolved, chain)
        return type(self)(*args, refs=self.refs, inherited=inherited)

    def with_refs(self, refs: Scope | None) -> Self:
        """These fields under another reference scope (a task's steps, a template's job)."""
        args = (self.params, self.templates, self.unresolved, self.chain)
        return type(self)(*args, refs=refs, inherited=self.inherited)

    def with_inherited(self, inherited: Inherited) -> Self:
        """These fields for steps that inherit ``env``, ``cwd`` or matrix values."""
        if inherited is self.inherited:
            return self
        args = (self.params, self.templates, self.unresolved, self.chain)
        return type(self)(*args, refs=self.refs, inherited=inherited)

    def under(self, raw: Mapping[Any, Any], path: str) -> Self:
        """The fields of what is below a job or task with this ``env`` and ``cwd``."""
        if "env" not in raw and "cwd" not in raw:
            return self
        env = self.env(raw["env"], path) if "env" in raw else None
        cwd = self.string(raw["cwd"], path, "cwd", no_nul=True) if "cwd" in raw else None
        return self.with_inherited(self.inherited.under(env, cwd))

    # -- typed scalars ---------------------------------------------------------------------

    def string(self, raw: object, path: str, key: str, *, no_nul: bool = False) -> str:
        """A string field, substituted. NUL is refused where the OS would refuse it later."""
        v = self.resolve(raw, path, key)
        if type(v) is not str:
            raise InvalidJob(at(path, key), f"expected a string, got {describe(v)}")
        return without_nul(v, path, key) if no_nul else v

    def number(self, raw: object, path: str, key: str) -> float:
        """A duration or factor: a finite number >= 0 (ints accepted, bools not)."""
        v = self.resolve(raw, path, key)
        if type(v) is float and 0.0 <= v < math.inf:
            return v
        if type(v) is int and 0 <= v < _BIG:
            return float(v)
        return self._bad_number(v, path, key)

    def _bad_number(self, v: object, path: str, key: str) -> float:
        """The error path of :meth:`number` (or a placeholder left for later, at define time)."""
        if self.lenient(v) or self.deferred(v):
            return cast(float, v)
        where = at(path, key)
        if type(v) is float and not math.isfinite(v):
            raise InvalidJob(where, f"must be a finite number, got {v}")
        if (type(v) is int or type(v) is float) and v < 0:
            raise InvalidJob(where, f"must not be negative, got {number_text(v)}")
        if type(v) is int:
            raise InvalidJob(where, "number too large")
        raise InvalidJob(where, f"expected a number, got {describe(v)}")

    def count(self, raw: object, path: str, key: str, minimum: int) -> int:
        """A count: an int (not a float, not a bool) of at least ``minimum``."""
        v = self.resolve(raw, path, key)
        if type(v) is int and v >= minimum:
            return v
        if self.lenient(v) or self.deferred(v):
            return cast(int, v)
        if type(v) is int:
            raise InvalidJob(at(path, key), f"must be at least {minimum}, got {number_text(v)}")
        raise InvalidJob(at(path, key), f"expected an integer, got {describe(v)}")

    def flag(self, raw: Mapping[Any, Any], path: str, key: str) -> bool | None:
        """``raw[key]``, true or false (``keep_workspace``, ``stream``), substituted; None if
        ``raw`` has no ``key``."""
        if key not in raw:
            return None
        value = self.resolve(raw[key], path, key)
        if type(value) is not bool:
            raise InvalidJob(at(path, key), f"expected true or false, got {describe_type(value)}")
        return value

    # -- objects -----------------------------------------------------------------------------

    def env(self, raw: object, path: str) -> dict[str, str]:
        """``env``: names as given (never substituted), values substituted strings."""
        v = self.resolve(raw, path, "env")
        where = at(path, "env")
        if type(v) is not dict:
            if self.lenient(v):
                return cast(dict[str, str], v)
            raise InvalidJob(where, f"expected an object of strings, got {describe(v)}")
        check = self if v is raw else self.literal
        env: dict[str, str] = {}
        for name, value in v.items():
            if type(name) is not str or not name or "=" in name or "\0" in name:
                raise InvalidJob(where, f"bad environment variable name {show_key(name)}")
            env[name] = check.string(value, where, name, no_nul=True)
        return env

    def retry(self, raw: object, path: str, key: str) -> Retry:
        """``{"attempts": n >= 1, "backoff": s >= 0, "factor": f >= 0}``."""
        v = self.resolve(raw, path, key)
        where = at(path, key)
        if type(v) is not dict:
            if self.lenient(v):
                return cast(Retry, v)
            raise InvalidJob(where, f"expected an object, got {describe(v)}")
        for k in v:
            if k not in _RETRY_KEYS:
                raise InvalidJob(where, f"unknown key {show_key(k)}")
        if "attempts" not in v:
            raise InvalidJob(where, "missing 'attempts'")
        check = self if v is raw else self.literal
        retry = Retry(
            check.count(v["attempts"], where, "attempts", 1),
            check.number(v["backoff"], where, "backoff") if "backoff" in v else 0.0,
            check.number(v["factor"], where, "factor") if "factor" in v else 2.0,
        )
        _check_delays(retry, where)
        return retry

    def limits(self, raw: Mapping[Any, Any], path: str) -> Limits:
        """A job's or a ``run`` step's ``limits`` (spec/_limits.py)."""
        if "limits" not in raw:
            return NO_LIMITS
        value = self.json_field(raw["limits"], path, "limits")
        return parse_limits(value, at(path, "limits"), self.lenient)

    def runner(self, raw: Mapping[Any, Any], path: str) -> str | None:
        """A job's or a ``run`` step's ``runner``: ``local`` or ``sandbox`` (None: inherited)."""
        if "runner" not in raw:
            return None
        value = self.resolve(raw["runner"], path, "runner")
        return parse_runner(value, at(path, "runner"), self.lenient)

    # -- JSON data (value, with, parameters) ---------------------------------------------------

    def json_field(self, raw: object, path: str, key: str) -> Any:
        """A JSON field: substituted, depth-capped and encodable; errors name the inner path.
        (The path is built only on error: this runs for every ``value`` step.)"""
        try:
            return self._json(raw, 0)
        except _Problem as problem:
            raise problem.at(at(path, key)) from None

    def json_at(self, raw: object, where: str) -> Any:
        """:meth:`json_field` for a field whose full path is ``where``."""
        try:
            return self._json(raw, 0)
        except _Problem as problem:
            raise problem.at(where) from None

    def _json(self, v: object, depth: int) -> object:
        """``v`` checked (and substituted), returned unchanged, without a copy, when possible."""
        if type(v) is str:
            return self._json_str(v, depth) if self.subst and "$" in v else v
        if type(v) is int:
            if _INT_MIN <= v <= _INT_MAX:
                return v
            raise _Problem("integer out of the 64-bit range")
        if type(v) is float:
            if -math.inf < v < math.inf:
                return v
            raise _Problem(f"numbers must be finite, got {v}")
        if v is None or type(v) is bool:
            return v
        if type(v) is list:
            return self._json_list(v, depth)
        if type(v) is dict:
            return self._json_dict(v, depth)
        raise _Problem(f"not a JSON value: {type(v).__name__}")

    def _json_str(self, s: str, depth: int) -> object:
        """A string in JSON data; a parameter's non-string value is checked, not substituted."""
        out = self._subst(s)
        if type(out) is str:
            return out
        return self.literal._json(out, depth)  # noqa: SLF001 (its own twin, same class)

    def _json_list(self, v: list[Any], depth: int) -> list[Any]:
        if depth >= MAX_JSON_DEPTH:
            raise _Problem(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        out: list[Any] | None = None
        i = 0
        try:
            for i, item in enumerate(v):
                new = self._json(item, depth + 1)
                if out is not None:
                    out.append(new)
                elif new is not item:
                    out = [*v[:i], new]
        except _Problem as problem:
            problem.where.append(f"[{i}]")
            raise
        return v if out is None else out

    def _json_dict(self, v: dict[Any, Any], depth: int) -> dict[Any, Any]:
        if depth >= MAX_JSON_DEPTH:
            raise _Problem(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        out: dict[Any, Any] | None = None
        key: object = None
        try:
            for key, item in v.items():
                new = self._json_member(key, item, depth + 1)
                if new is not item:
                    out = dict(v) if out is None else out
                    out[key] = new
        except _Problem as problem:
            problem.where.append(key_suffix(key))
            raise
        return v if out is None else out

    def _json_member(self, key: object, item: object, depth: int) -> object:
        if type(key) is not str:
            raise _Problem("object keys must be strings")
        return self._json(item, depth)

    # -- substitution --------------------------------------------------------------------------

    def resolve(self, raw: object, path: str, key: str) -> object:
        """A raw field with its parameters substituted; the no-``$`` case costs one test."""
        if type(raw) is not str or "$" not in raw or not self.subst:
            return raw
        try:
            return self._subst(raw)
        except _Problem as problem:
            raise problem.at(at(path, key)) from None

    def _subst(self, s: str) -> object:
        """``${params.X}`` alone is X's value itself; inside text it is X as text (JSON text
        when X is not a string); ``$${`` is a literal ``${``; ``${job...}`` and ``${tasks...}``
        follow the same rules (:meth:`_runtime`); other ``${...}`` are left alone."""
        whole = _WHOLE.fullmatch(s)
        if whole is not None:
            return self._param(whole)
        if "${" not in s:
            return s
        if _RUNTIME_WHOLE.fullmatch(s):
            return self._runtime(s)
        return _TOKEN.sub(self._piece, s)

    def _param(self, match: re.Match[str]) -> object:
        """``${params.X}`` or ``${matrix.X}``: the value (match groups: kind, name)."""
        if match.group(1) == "matrix":
            return self._matrix_value(match.group(2))
        value = self.params.get(match.group(2), MISSING)
        if value is not MISSING:
            return value
        if self.unresolved:
            return match.group(0)
        raise _Problem(f"unknown parameter {match.group(2)!r}")

    def _matrix_value(self, name: str) -> object:
        matrix = self.inherited.matrix
        if matrix is None:
            raise _Problem(
                f"${{matrix.{name}}}: only the steps of a task with a 'matrix' have matrix values"
            )
        value = matrix.get(name, MISSING)
        if value is MISSING:
            names = ", ".join(map(repr, matrix))
            raise _Problem(f"unknown matrix name {name!r} (this task's matrix has {names})")
        return value

    def _piece(self, match: re.Match[str]) -> str:
        if match.group(1) is None:
            if match.group(3) is not None:
                return self._runtime_text(match.group(3))
            return "${"  # the escape $${
        value = self._param(match)
        if type(value) is str:
            return value
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            raise _Problem(f"parameter {match.group(2)!r} cannot be written as JSON") from None

    def lenient(self, v: object) -> bool:
        """Define time only: a typed field may still hold one unresolved ``${params.X}``."""
        return self.unresolved and self.subst and type(v) is str and bool(_WHOLE.fullmatch(v))

    # -- runtime references (see _refs.py) ------------------------------------------------------

    def _runtime(self, text: str) -> object:
        """A ``${job...}``/``${tasks...}`` reference: its value, or itself when known later."""
        if self.refs is None:
            raise NeedsScope
        try:
            return self.refs.value(text)
        except RefProblem as exc:
            raise _Problem(str(exc)) from None

    def _runtime_text(self, text: str) -> str:
        value = self._runtime(text)
        if type(value) is str:
            return value
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            raise _Problem(f"the value of {text} cannot be written as JSON") from None

    def deferred(self, v: object) -> bool:
        """A number or count given as exactly one ``${tasks...}``: a placeholder until the task
        runs, when its unit is validated again with the value (only numbers: see _refs.py)."""
        return self.refs is not None and self.subst and type(v) is str and self.refs.defers(v)


def _check_delays(retry: Retry, where: str) -> None:
    """Refuse a retry whose waits overflow a float (``factor ** (attempts - 2)``): they could
    not be slept, nor written in a ``retry`` event, and no try after one would ever come."""
    numbers = (retry.attempts, retry.backoff, retry.factor)
    if not all(type(n) in (int, float) for n in numbers):
        return  # a placeholder, checked when the job is submitted
    if not math.isfinite(retry.longest_delay()):
        raise InvalidJob(
            where,
            f"the wait before the last of {number_text(retry.attempts)} attempts (backoff "
            f"{number_text(retry.backoff)} x factor {number_text(retry.factor)} to the power "
            "attempts - 2) is too large to represent; use fewer attempts or a smaller factor",
        )
