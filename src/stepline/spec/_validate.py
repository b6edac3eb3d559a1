"""Validation of job specs: raw JSON in, frozen :mod:`stepline.spec._model` objects out.

One hand-written recursive descent does three jobs in a single pass over the raw JSON:

* it substitutes ``${params.NAME}`` in every string of the step tree, and type-checks each field
  right after substituting it, so ``{"sleep": "${params.d}"}`` is a sleep of ``d`` seconds and an
  error always names the path of the field (``steps[2].par[0].run``);
* it checks every type strictly (a bool is not a number, ``2.5`` is not an int, numbers are
  finite), so the interpreters can trust a spec without re-checking anything;
* it expands ``use`` steps into the validated jobs of their templates.

Why hand-written: this runs on every ``submit``, on the hot path of every job. A single pass that
hands back the raw objects untouched wherever nothing needs substituting is several times faster
than a generic structuring library, and it knows step paths, which such a library does not.

Why bounded: the input comes from a pipe and orjson accepts JSON nested 1024 deep, so every
recursion here has a cap (steps: :data:`MAX_STEP_DEPTH` levels, counted across templates too;
``value`` JSON and parameter values: :data:`MAX_JSON_DEPTH` levels) and no ``RecursionError`` can
escape, whatever the input.

Substituted values are data, not templates: a value that came from a parameter is type-checked
but never substituted again (the "literal" validator below), so a parameter whose text happens to
contain ``${params.x}`` cannot inject anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, cast

import attrs
import orjson

from .._errors import InvalidJob
from ._graph import RefProblem, Scope, Unit, describe, parse_job_body
from ._inherit import NOTHING_INHERITED, Inherited
from ._limits import NO_LIMITS, Limits, parse_limits, parse_runner
from ._model import (
    NO_MODIFIERS,
    Deferred,
    Fail,
    JobSpec,
    Log,
    Modifiers,
    Par,
    Race,
    Retry,
    Run,
    Seq,
    Sleep,
    Step,
    Try,
    Use,
    Value,
)
from ._signature import check_arguments

if TYPE_CHECKING:
    from ._callbacks import Callback

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_STEP_DEPTH",
    "resolve_unit",
    "validate_job",
    "validate_template",
]

MAX_STEP_DEPTH: Final = 64
"""Steps may nest this many levels (a job's own steps are level 1; templates count too)."""

MAX_JSON_DEPTH: Final = 64
"""Lists and objects inside a ``value``, ``with`` or parameter may nest this many levels."""

_MISSING: Final = object()
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})

_KINDS: Final = frozenset(
    ("sleep", "value", "log", "fail", "run", "seq", "par", "race", "try", "use", "http")
)
_MODIFIER_KEYS: Final = ("name", "timeout", "retry")
_OPTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "run": ("env", "cwd", "stdin", "grace", "stream", "parse", "limits", "runner", "network"),
    "par": ("limit",),
    "try": ("catch",),
    "use": ("with",),
}
_ALLOWED: Final = {k: frozenset((k, *_MODIFIER_KEYS, *_OPTIONS.get(k, ()))) for k in _KINDS}
_STEP_KEYS: Final = frozenset().union(*_ALLOWED.values())
_JOB_KEYS: Final = frozenset(
    (
        *("steps", "tasks", "name", "timeout", "retry", "params", "on_finish", "limit"),
        *("keep_workspace", "stream", "env", "cwd", "artifacts"),
        "hook",  # a template that POST /hooks/{name} may submit (the HTTP front)
        *("limits", "runner"),
    )
)
_PARSE_MODES: Final = ("json", "text", "lines")
_RETRY_KEYS: Final = frozenset(("attempts", "backoff", "factor"))

_INT_MIN: Final = -(2**63)  # the range orjson can encode: int64 and uint64
_INT_MAX: Final = 2**64 - 1
_BIG: Final = 2**1000  # beyond this an int does not convert to a float

_NAME: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_WHOLE: Final = re.compile(rf"\$\{{(params|matrix)\.({_NAME})\}}")
_RUNTIME: Final = r"\$\{(?:tasks|job)\.[^}]*\}"  # ${tasks...}, ${job...}: see _graph.py
_RUNTIME_WHOLE: Final = re.compile(_RUNTIME)
_TOKEN: Final = re.compile(rf"\$\$\{{|\$\{{(params|matrix)\.({_NAME})\}}|({_RUNTIME})")
_IDENT: Final = re.compile(_NAME)


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


class _NeedsScope(Exception):
    """A ``${job...}``/``${tasks...}`` reference met by a validator without a :class:`Scope`.

    The root validator starts without one, so the common job (no such reference) never pays
    for it; :func:`validate_job` catches this and validates again with a scope (_graph.py).
    """


def _at(path: str, key: str) -> str:
    """The path of ``key`` below ``path``; paths are built only when needed (errors, children)."""
    if not key:
        return path
    return f"{path}.{key}" if path else key


def _short(text: str) -> str:
    """A string quoted for a message, cut short: messages must stay one readable line."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _show_key(key: object) -> str:
    """An object key for a message (non-string keys only come from Python callers)."""
    return _short(key) if type(key) is str else f"<{type(key).__name__} key>"


def _number_text(v: float) -> str:
    """A number for a message; huge ints are not printed (str() of them can even raise)."""
    return str(v) if type(v) is float or -(10**30) < v < 10**30 else "a huge number"


def _describe(v: object) -> str:
    """The JSON type of ``v`` (and a short rendering of scalars) for "expected X, got Y"."""
    if v is None:
        return "null"
    if type(v) is bool:
        return f"boolean {'true' if v else 'false'}"
    if type(v) is int or type(v) is float:
        return f"number {_number_text(v)}"
    if type(v) is str:
        return f"string {_short(v)}"
    if type(v) is list:
        return "list"
    if type(v) is dict:
        return "object"
    return type(v).__name__


def _key_suffix(key: object) -> str:
    """The path suffix of an object member: ``.key``, or ``["odd key"]`` when not an identifier."""
    if type(key) is str and _IDENT.fullmatch(key):
        return f".{key}"
    return f"[{_show_key(key)}]"


_ALIASES: Final[Mapping[str, str]] = {
    # words other tools use for what stepline calls otherwise: no spelling is close enough
    **dict.fromkeys(("cmd", "command", "exec", "shell", "sh", "script", "args", "argv"), "run"),
    **dict.fromkeys(("parallel", "paralel", "parralel", "concurrent", "all", "fanout"), "par"),
    **dict.fromkeys(("sequence", "serial", "series"), "seq"),
    **dict.fromkeys(("environment", "environ", "vars"), "env"),
    **dict.fromkeys(("dir", "workdir", "working_dir", "directory", "chdir"), "cwd"),
    **dict.fromkeys(("input", "inputs", "parameters", "args_for", "arguments"), "with"),
    **dict.fromkeys(("template", "call", "include", "uses"), "use"),
    **dict.fromkeys(("retries", "attempts", "repeat"), "retry"),
    **dict.fromkeys(("timeout_s", "time_limit", "deadline", "timelimit"), "timeout"),
    **dict.fromkeys(("wait", "delay"), "sleep"),
    **dict.fromkeys(("concurrency", "max_parallel", "jobs", "workers"), "limit"),
}
_CLOSE_ENOUGH: Final = 0.75  # difflib's 0.6 offered 'params' for 'paralel', 'cwd' for 'cmd'


def _closest(key: str, known: frozenset[str]) -> str | None:
    """The key a typo most likely meant: the closest spelling, else a word another tool uses
    for it (or a misspelling of that word: 'enviroment')."""
    import difflib  # start-up time: needed only for a message

    word = key.lower()
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=_CLOSE_ENOUGH)
    if close:
        return close[0]
    alias = difflib.get_close_matches(word, list(_ALIASES), n=1, cutoff=0.85)
    return _ALIASES[alias[0]] if alias and _ALIASES[alias[0]] in known else None


def _owners(key: str) -> str:
    """The step kinds that take ``key``: ``'a run step'``, ``'a par or use step'``."""
    kinds = sorted(kind for kind, allowed in _ALLOWED.items() if key in allowed)
    return f"a {' or '.join(kinds)} step"


def _unknown_key(key: object, kind: str | None = None, *, job: bool = False) -> str:
    """The message for a key nothing expects here (a ``kind`` step's, a step whose kind is not
    known yet, or a ``job`` object's), with a hint: a typo, a key that belongs one level up or
    down, or a word another tool uses. A key is never suggested as a fix for itself."""
    where = f" for a {kind} step" if kind else ""
    message = f"unknown key {_show_key(key)}{where}"
    if type(key) is not str:
        return message
    here = _ALLOWED[kind] if kind else _JOB_KEYS if job else _STEP_KEYS
    if key in _STEP_KEYS and key not in _KINDS and not (job and key in _JOB_KEYS):
        return message + f": it belongs on {_owners(key)}"
    if key in _JOB_KEYS and not job:
        return message + ': it is a job key; put the step in a job\'s "steps" list to use it'
    if key in _KINDS and job:
        return message + f': a {key} step goes in the job\'s "steps" list'
    close = _closest(key, here) or _closest(key, _STEP_KEYS if job else _JOB_KEYS)
    if close is None or close == key:
        return message
    if close in here:
        return message + f" (did you mean {close!r}?)"
    if close in _KINDS:
        return message + f" (did you mean a {close!r} step?)"
    if close in _JOB_KEYS:
        return message + f" (did you mean the job key {close!r}?)"
    return message + f" (did you mean {close!r}, a key of {_owners(close)}?)"


def _no_kind(raw: Mapping[Any, Any]) -> str:
    """Why a step object has no kind: a misspelt key, or the kind was simply left out."""
    for key in raw:
        if key not in _STEP_KEYS:
            return _unknown_key(key)
    kinds = ", ".join(sorted(_KINDS))
    return f"{'empty step' if not raw else 'no step kind'}: expected one of {kinds}"


def _kind_of(raw: Mapping[Any, Any], path: str) -> str:
    """The one kind key of a step with several keys; every other key must suit that kind."""
    kinds = [key for key in raw if key in _KINDS]
    if not kinds:
        raise InvalidJob(path, _no_kind(raw))
    if len(kinds) > 1:
        raise InvalidJob(path, f"more than one step kind: {', '.join(map(repr, kinds))}")
    kind: str = kinds[0]
    allowed = _ALLOWED[kind]
    for key in raw:
        if key not in allowed:
            raise InvalidJob(path, _unknown_key(key, kind))
    return kind


class _Validator:
    """The descent over one job's steps, with that job's effective parameters.

    Each job (the submitted one, and each expanded template) gets its own validator, because
    parameters are per job. ``chain`` is the list of templates being expanded, to catch cycles.
    ``subst`` is off in the literal twin used for values that came out of a parameter.
    ``refs`` says what ``${job...}`` and ``${tasks...}`` mean here (see
    :mod:`stepline.spec._graph`).
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
        self.inherited = inherited  # env, cwd and matrix values from around (_inherit.py)
        self._literal: _Validator | None = None

    @property
    def literal(self) -> _Validator:
        """The twin that checks without substituting: for data that came from a parameter."""
        if self._literal is None:
            args = (self.params, self.templates, self.unresolved, self.chain)
            self._literal = _Validator(*args, subst=False, refs=self.refs, inherited=self.inherited)
        return self._literal

    def _for(self, params: Mapping[str, Any], chain: tuple[str, ...]) -> _Validator:
        """The validator of a job with these params (``self`` when nothing differs: hot path)."""
        if params is self.params and chain is self.chain and self.subst:
            return self
        inherited = self.inherited.for_template()
        args = (params, self.templates, self.unresolved, chain)
        return _Validator(*args, refs=self.refs, inherited=inherited)

    def with_refs(self, refs: Scope | None) -> _Validator:
        """This validator under another reference scope (a task's steps, a template's job)."""
        args = (self.params, self.templates, self.unresolved, self.chain)
        return _Validator(*args, refs=refs, inherited=self.inherited)

    def with_inherited(self, inherited: Inherited) -> _Validator:
        """This validator for steps that inherit ``env``, ``cwd`` or matrix values."""
        if inherited is self.inherited:
            return self
        args = (self.params, self.templates, self.unresolved, self.chain)
        return _Validator(*args, refs=self.refs, inherited=inherited)

    def under(self, raw: Mapping[Any, Any], path: str) -> _Validator:
        """The validator for what is below a job or task with this ``env`` and ``cwd``."""
        if "env" not in raw and "cwd" not in raw:
            return self
        env = self._env(raw["env"], path) if "env" in raw else None
        cwd = self._string(raw["cwd"], path, "cwd", no_nul=True) if "cwd" in raw else None
        return self.with_inherited(self.inherited.under(env, cwd))

    # -- jobs --------------------------------------------------------------------------------

    def job(
        self,
        raw: object,
        base: str,
        overrides: Mapping[str, Any] | None,
        chain: tuple[str, ...],
        depth: int,
    ) -> JobSpec:
        """A job at ``base`` ("" or ``steps[0].use``); its steps nest at ``depth + 1``.

        ``overrides`` are the submit's ``params`` (or a ``use``'s ``with``), laid over the
        job's own defaults. A bare step is the job ``{"steps": [step]}``, and is its body itself,
        at ``steps[0]``: a one-step ``Seq`` around it would change nothing but cost a frozen
        object to build and a coroutine to run (a visible share of a ``{"value": 1}`` job).
        """
        if type(raw) is not dict:
            raw = _job_object(raw, base)
        if "steps" not in raw and "tasks" not in raw and not _KINDS.isdisjoint(raw):
            v = self._for(overrides or _EMPTY, chain)
            step = v._step(raw, _at(base, "steps[0]"), depth + 1)
            return JobSpec(body=step, params=v.params)
        return self._full_job(raw, base, overrides, chain, depth)

    def _full_job(
        self,
        raw: dict[Any, Any],
        base: str,
        overrides: Mapping[str, Any] | None,
        chain: tuple[str, ...],
        depth: int,
    ) -> JobSpec:
        """A job object with ``steps`` and job-level modifiers (substituted, like steps)."""
        for key in raw:
            if key not in _JOB_KEYS:
                raise InvalidJob(base, _unknown_key(key, job=True))
        if "hook" in raw and type(raw["hook"]) is not bool:
            raise InvalidJob(
                _at(base, "hook"), f"expected true or false, got {_describe(raw['hook'])}"
            )
        v = self._for(_merge_params(raw.get("params", _MISSING), overrides, base), chain)
        body = parse_job_body(v.under(raw, base), raw, base, depth)  # `steps` or `tasks`
        mods = v._mods(raw, base)
        on_finish = _on_finish(v, raw["on_finish"], base) if "on_finish" in raw else ()
        return JobSpec(
            body=body,
            name=mods.name,
            timeout=mods.timeout,
            retry=mods.retry,
            params=v.params,
            on_finish=on_finish,
            keep_workspace=_flag(v, raw, base, "keep_workspace") or False,
            stream=_flag(v, raw, base, "stream"),
            artifacts=_artifacts(v, raw["artifacts"], base) if "artifacts" in raw else (),
            limits=_limits(v, raw, base),
            runner=_runner(v, raw, base),
        )

    # -- steps -------------------------------------------------------------------------------

    def _step(self, raw: object, path: str, depth: int) -> Step:
        """One step at ``path``, nested ``depth`` levels deep. Hot path: one key, no modifiers."""
        if type(raw) is not dict:
            return self._indirect_step(raw, path, depth)
        if depth > MAX_STEP_DEPTH:
            raise InvalidJob(path, f"steps nested deeper than {MAX_STEP_DEPTH} levels")
        if len(raw) == 1:
            for only in raw:
                parse = _PARSERS.get(only)
                if parse is not None:
                    return parse(self, raw, path, depth, NO_MODIFIERS)
        kind = _kind_of(raw, path)
        return _PARSERS[kind](self, raw, path, depth, self._mods(raw, path))

    def _indirect_step(self, raw: object, path: str, depth: int) -> Step:
        """A step given as ``"${params.s}"`` (checked literally), or not a step at all."""
        v = self._resolve(raw, path, "")
        if type(v) is dict:
            return self.literal._step(v, path, depth)
        if self._lenient(v):
            return cast(Step, v)
        raise InvalidJob(path, f"a step must be an object, got {_describe(raw)}")

    def _steps(
        self, raw: object, path: str, key: str, depth: int, empty_ok: bool
    ) -> tuple[Step, ...]:
        """A list of steps at ``path.key[i]``, each nested ``depth`` levels deep."""
        if type(raw) is not list:
            return self._indirect_steps(raw, path, key, depth, empty_ok)
        if not raw and not empty_ok:
            raise InvalidJob(_at(path, key), "must not be empty")
        prefix = f"{path}.{key}" if path else key
        step = self._step
        return tuple([step(item, f"{prefix}[{i}]", depth) for i, item in enumerate(raw)])

    def _indirect_steps(
        self, raw: object, path: str, key: str, depth: int, empty_ok: bool
    ) -> tuple[Step, ...]:
        """A list of steps given as ``"${params.s}"`` (checked literally), or not a list."""
        v = self._resolve(raw, path, key)
        if type(v) is list:
            return self.literal._steps(v, path, key, depth, empty_ok)
        if self._lenient(v):
            return cast(tuple[Step, ...], v)
        raise InvalidJob(_at(path, key), f"expected a list of steps, got {_describe(v)}")

    def _mods(self, raw: Mapping[Any, Any], path: str) -> Modifiers:
        """``name``, ``timeout`` and ``retry`` of a step (or of a job, at its base path)."""
        name = raw.get("name", _MISSING)
        timeout = raw.get("timeout", _MISSING)
        retry = raw.get("retry", _MISSING)
        if name is _MISSING and timeout is _MISSING and retry is _MISSING:
            return NO_MODIFIERS
        return Modifiers(
            None if name is _MISSING else self._string(name, path, "name"),
            None if timeout is _MISSING else self._number(timeout, path, "timeout"),
            None if retry is _MISSING else self._retry(retry, path, "retry"),
        )

    def _retry(self, raw: object, path: str, key: str) -> Retry:
        """``{"attempts": n >= 1, "backoff": s >= 0, "factor": f >= 0}``."""
        v = self._resolve(raw, path, key)
        where = _at(path, key)
        if type(v) is not dict:
            if self._lenient(v):
                return cast(Retry, v)
            raise InvalidJob(where, f"expected an object, got {_describe(v)}")
        for k in v:
            if k not in _RETRY_KEYS:
                raise InvalidJob(where, f"unknown key {_show_key(k)}")
        if "attempts" not in v:
            raise InvalidJob(where, "missing 'attempts'")
        check = self if v is raw else self.literal
        return Retry(
            check._int(v["attempts"], where, "attempts", 1),
            check._number(v["backoff"], where, "backoff") if "backoff" in v else 0.0,
            check._number(v["factor"], where, "factor") if "factor" in v else 2.0,
        )

    # -- step kinds (one method each; dispatched through _PARSERS) ------------------------------

    def _sleep(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        return Sleep(path=path, mods=mods, seconds=self._number(raw["sleep"], path, "sleep"))

    def _value(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        return Value(path=path, mods=mods, value=self._json_field(raw["value"], path, "value"))

    def _log(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        return Log(path=path, mods=mods, message=self._string(raw["log"], path, "log"))

    def _fail(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        return Fail(path=path, mods=mods, message=self._string(raw["fail"], path, "fail"))

    def _run(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        argv = self._argv(raw["run"], path)
        around = self.inherited
        if len(raw) == 1 and around is NOTHING_INHERITED:
            return Run(path=path, mods=mods, argv=argv)
        get = raw.get
        env, cwd, stdin, grace = get("env", _MISSING), get("cwd"), get("stdin"), get("grace")
        return Run(
            path=path,
            mods=mods,
            argv=argv,
            env=around.run_env(None if env is _MISSING else self._env(env, path)),
            cwd=around.run_cwd(
                None if "cwd" not in raw else self._string(cwd, path, "cwd", no_nul=True)
            ),
            stdin=None if "stdin" not in raw else self._string(stdin, path, "stdin"),
            grace=5.0 if "grace" not in raw else self._number(grace, path, "grace"),
            stream=_flag(self, raw, path, "stream"),
            parse=None if "parse" not in raw else self._parse_mode(raw["parse"], path),
            limits=_limits(self, raw, path),
            runner=_runner(self, raw, path),
            network=bool(_flag(self, raw, path, "network")),
        )

    def _parse_mode(self, raw: object, path: str) -> str:
        """A ``run``'s ``parse``: ``json``, ``text`` or ``lines``."""
        v = self._string(raw, path, "parse")
        if v not in _PARSE_MODES and not self._lenient(v):
            raise InvalidJob(
                _at(path, "parse"), f"expected one of 'json', 'text', 'lines', got {_short(v)}"
            )
        return v

    def _seq(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        steps = self._steps(raw["seq"], path, "seq", depth + 1, True)
        return Seq(path=path, mods=mods, steps=steps)

    def _par(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        steps = self._steps(raw["par"], path, "par", depth + 1, False)
        limit = self._int(raw["limit"], path, "limit", 1) if "limit" in raw else None
        return Par(path=path, mods=mods, steps=steps, limit=limit)

    def _race(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        steps = self._steps(raw["race"], path, "race", depth + 1, False)
        return Race(path=path, mods=mods, steps=steps)

    def _try(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        body = self._step(raw["try"], _at(path, "try"), depth + 1)
        catch = self._step(raw["catch"], _at(path, "catch"), depth + 1) if "catch" in raw else None
        return Try(path=path, mods=mods, body=body, catch=catch)

    def _use(self, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
        name = self._string(raw["use"], path, "use")
        args = self._with(raw.get("with", _MISSING), path)
        job = self._expand(name, args, path, depth)
        return Use(path=path, mods=mods, template=name, job=job)

    # -- run and use details -----------------------------------------------------------------

    def _argv(self, raw: object, path: str) -> tuple[str, ...]:
        """A ``run``: a shell line becomes ``/bin/sh -c line``; a list is argv as is."""
        v = self._resolve(raw, path, "run")
        if type(v) is str:
            if not v:
                raise InvalidJob(_at(path, "run"), "a shell line must not be empty")
            return ("/bin/sh", "-c", _no_nul(v, path, "run"))
        if type(v) is not list or not v:
            got = "an empty list" if type(v) is list else _describe(v)
            raise InvalidJob(
                _at(path, "run"), f"expected a list of strings or a shell line, got {got}"
            )
        check = self if v is raw else self.literal
        argv: list[str] = []
        for i, item in enumerate(v):
            check._arg(argv, item, path, i)
        if not argv:
            raise InvalidJob(_at(path, "run"), "no arguments left once the lists were spliced in")
        if not argv[0]:
            raise InvalidJob(_at(path, "run[0]"), "the program name must not be empty")
        return tuple(argv)

    def _arg(self, argv: list[str], item: object, path: str, i: int) -> None:
        """One argv element, appended to ``argv``: a string, or the strings of a list that a
        ``${...}`` standing alone resolved to (spliced in). The fast path avoids building a
        path that is only used on errors."""
        if type(item) is str and "$" not in item and "\0" not in item:
            argv.append(item)
            return
        key = f"run[{i}]"
        value = self._resolve(item, path, key)
        if type(value) is list:
            argv.extend(_spliced(value, _at(path, key)))
        elif type(value) is str:
            argv.append(_no_nul(value, path, key))
        elif (type(value) is int or type(value) is float) and value is not item:
            argv.append(orjson.dumps(value).decode())  # `${matrix.shard}` standing alone
        else:
            raise InvalidJob(_at(path, key), f"expected a string, got {_describe(value)}")

    def _env(self, raw: object, path: str) -> dict[str, str]:
        """``env``: names as given (never substituted), values substituted strings."""
        v = self._resolve(raw, path, "env")
        where = _at(path, "env")
        if type(v) is not dict:
            if self._lenient(v):
                return cast(dict[str, str], v)
            raise InvalidJob(where, f"expected an object of strings, got {_describe(v)}")
        check = self if v is raw else self.literal
        env: dict[str, str] = {}
        for name, value in v.items():
            if type(name) is not str or not name or "=" in name or "\0" in name:
                raise InvalidJob(where, f"bad environment variable name {_show_key(name)}")
            env[name] = check._string(value, where, name, no_nul=True)
        return env

    def _with(self, raw: object, path: str) -> Mapping[str, Any]:
        """``with``: any JSON object, substituted in this job's params, for the template's."""
        if raw is _MISSING:
            return _EMPTY
        v = self._json_field(raw, path, "with")
        if type(v) is dict:
            return v
        if self._lenient(v):
            return _EMPTY  # define time: the arguments are not known yet
        raise InvalidJob(_at(path, "with"), f"expected an object, got {_describe(v)}")

    def _expand(self, name: str, args: Mapping[str, Any], path: str, depth: int) -> JobSpec:
        """The template's job, validated with its defaults under ``args``, at ``path.use``."""
        where = _at(path, "use")
        if self._lenient(name):  # define time: which template is not known yet
            return JobSpec(body=Seq(path=where, steps=()))
        if name in self.chain:
            cycle = (*self.chain[self.chain.index(name) :], name)
            raise InvalidJob(where, "template cycle: " + " -> ".join(cycle))
        raw = None if self.templates is None else self.templates.get(name)
        if raw is None:
            raise InvalidJob(where, f"unknown template {_short(name)}")
        check_arguments(name, raw, args, _at(path, "with"))
        inner = self if self.refs is None else self.with_refs(self.refs.for_template())
        return inner.job(raw, where, args, (*self.chain, name), depth)

    # -- typed scalars ---------------------------------------------------------------------

    def _string(self, raw: object, path: str, key: str, *, no_nul: bool = False) -> str:
        """A string field, substituted. NUL is refused where the OS would refuse it later."""
        v = self._resolve(raw, path, key)
        if type(v) is not str:
            raise InvalidJob(_at(path, key), f"expected a string, got {_describe(v)}")
        return _no_nul(v, path, key) if no_nul else v

    def _number(self, raw: object, path: str, key: str) -> float:
        """A duration or factor: a finite number >= 0 (ints accepted, bools not)."""
        v = self._resolve(raw, path, key)
        if type(v) is float and 0.0 <= v < math.inf:
            return v
        if type(v) is int and 0 <= v < _BIG:
            return float(v)
        return self._bad_number(v, path, key)

    def _bad_number(self, v: object, path: str, key: str) -> float:
        """The error path of :meth:`_number` (or a placeholder left for later, at define time)."""
        if self._lenient(v) or self._deferred(v):
            return cast(float, v)
        where = _at(path, key)
        if type(v) is float and not math.isfinite(v):
            raise InvalidJob(where, f"must be a finite number, got {v}")
        if (type(v) is int or type(v) is float) and v < 0:
            raise InvalidJob(where, f"must not be negative, got {_number_text(v)}")
        if type(v) is int:
            raise InvalidJob(where, "number too large")
        raise InvalidJob(where, f"expected a number, got {_describe(v)}")

    def _int(self, raw: object, path: str, key: str, minimum: int) -> int:
        """A count: an int (not a float, not a bool) of at least ``minimum``."""
        v = self._resolve(raw, path, key)
        if type(v) is int and v >= minimum:
            return v
        if self._lenient(v) or self._deferred(v):
            return cast(int, v)
        if type(v) is int:
            raise InvalidJob(_at(path, key), f"must be at least {minimum}, got {_number_text(v)}")
        raise InvalidJob(_at(path, key), f"expected an integer, got {_describe(v)}")

    # -- JSON data (value, with, parameters) ---------------------------------------------------

    def _json_field(self, raw: object, path: str, key: str) -> Any:
        """A JSON field: substituted, depth-capped and encodable; errors name the inner path."""
        try:
            return self._json(raw, 0)
        except _Problem as problem:
            raise problem.at(_at(path, key)) from None

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
        return self.literal._json(out, depth)

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
            problem.where.append(_key_suffix(key))
            raise
        return v if out is None else out

    def _json_member(self, key: object, item: object, depth: int) -> object:
        if type(key) is not str:
            raise _Problem("object keys must be strings")
        return self._json(item, depth)

    # -- parameters --------------------------------------------------------------------------

    def _resolve(self, raw: object, path: str, key: str) -> object:
        """A raw field with its parameters substituted; the no-``$`` case costs one test."""
        if type(raw) is not str or "$" not in raw or not self.subst:
            return raw
        try:
            return self._subst(raw)
        except _Problem as problem:
            raise problem.at(_at(path, key)) from None

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
        value = self.params.get(match.group(2), _MISSING)
        if value is not _MISSING:
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
        value = matrix.get(name, _MISSING)
        if value is _MISSING:
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

    def _lenient(self, v: object) -> bool:
        """Define time only: a typed field may still hold one unresolved ``${params.X}``."""
        return self.unresolved and self.subst and type(v) is str and bool(_WHOLE.fullmatch(v))

    # -- runtime references (see _graph.py) ------------------------------------------------------

    def _runtime(self, text: str) -> object:
        """A ``${job...}``/``${tasks...}`` reference: its value, or itself when known later."""
        if self.refs is None:
            raise _NeedsScope
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

    def _deferred(self, v: object) -> bool:
        """A number or count given as exactly one ``${tasks...}``: a placeholder until the task
        runs, when its unit is validated again with the value (only numbers: see _graph.py)."""
        return self.refs is not None and self.subst and type(v) is str and self.refs.defers(v)


def _on_finish(v: _Validator, raw: object, path: str) -> tuple[Callback, ...]:
    from ._callbacks import parse_on_finish  # start-up time: only jobs with callbacks

    return parse_on_finish(v, raw, path)


def _artifacts(v: _Validator, raw: object, base: str) -> tuple[str, ...]:
    from ._artifacts import parse_artifacts  # start-up time: only jobs with artifacts

    return parse_artifacts(v, raw, base)


def _spliced(values: list[Any], where: str) -> list[str]:
    """A list spliced into an argv: strings, or numbers written as JSON text."""
    out: list[str] = []
    for j, value in enumerate(values):
        if type(value) is str and "\0" not in value:
            out.append(value)
        elif type(value) is int or type(value) is float:
            out.append(orjson.dumps(value).decode())
        else:
            got = "a string holding NUL" if type(value) is str else _describe(value)
            raise InvalidJob(f"{where}[{j}]", f"expected a string or a number to splice, got {got}")
    return out


def _flag(v: _Validator, raw: dict[Any, Any], base: str, key: str) -> bool | None:
    """A true-or-false field (``keep_workspace``, ``stream``), substituted; None if absent."""
    if key not in raw:
        return None
    value = v._resolve(raw[key], base, key)
    if type(value) is not bool:
        raise InvalidJob(_at(base, key), f"expected true or false, got {describe(value)}")
    return value


def _limits(v: _Validator, raw: dict[Any, Any], base: str) -> Limits:
    """A job's or a ``run`` step's ``limits`` (spec/_limits.py)."""
    if "limits" not in raw:
        return NO_LIMITS
    value = v._json_field(raw["limits"], base, "limits")
    return parse_limits(value, _at(base, "limits"), v._lenient)


def _runner(v: _Validator, raw: dict[Any, Any], base: str) -> str | None:
    """A job's or a ``run`` step's ``runner``: ``local`` or ``sandbox`` (None: inherited)."""
    if "runner" not in raw:
        return None
    value = v._resolve(raw["runner"], base, "runner")
    return parse_runner(value, _at(base, "runner"), v._lenient)


def _http(v: _Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    from ._http import parse_http  # start-up time: only jobs with `http` steps need it

    return parse_http(v, raw, path, depth, mods)


_Parser = Callable[[_Validator, dict[str, Any], str, int, Modifiers], Step]
_PARSERS: Final[dict[str, _Parser]] = {
    "sleep": _Validator._sleep,
    "value": _Validator._value,
    "log": _Validator._log,
    "fail": _Validator._fail,
    "run": _Validator._run,
    "seq": _Validator._seq,
    "par": _Validator._par,
    "race": _Validator._race,
    "try": _Validator._try,
    "use": _Validator._use,
    "http": _http,
}

_PLAIN: Final = _Validator(_EMPTY, None, False, ())
"""The validator of the common case (no params, no templates): shared, it holds no state."""

_CHECKER: Final = _PLAIN.literal
"""Checks parameter values as JSON data without substituting anything in them."""


def _no_nul(s: str, path: str, key: str) -> str:
    """Strings handed to the OS (argv, env, cwd) cannot hold NUL: refuse it now, with a path."""
    if "\0" in s:
        raise InvalidJob(_at(path, key), "must not contain a NUL character")
    return s


def _job_object(raw: object, base: str) -> dict[Any, Any]:
    """A job must be a JSON object (any Mapping from a Python caller is copied into a dict)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    raise InvalidJob(base, f"a job must be an object, got {_describe(raw)}")


def _check_params(params: Mapping[Any, Any], path: str) -> None:
    """Parameter values must be encodable JSON data, since they end up in outputs and text."""
    for key, value in params.items():
        if type(key) is not str:
            raise InvalidJob(path, f"parameter names must be strings, got {_show_key(key)}")
        try:
            _CHECKER._json(value, 0)
        except _Problem as problem:
            raise problem.at(f"{path}{_key_suffix(key)}") from None


def _merge_params(
    defaults: object, overrides: Mapping[str, Any] | None, base: str
) -> Mapping[str, Any]:
    """The effective params of a job: its own defaults (never substituted) under overrides."""
    if defaults is _MISSING:
        return overrides or _EMPTY
    path = _at(base, "params")
    if type(defaults) is not dict:
        raise InvalidJob(path, f"expected an object, got {_describe(defaults)}")
    if not defaults:
        return overrides or _EMPTY
    _check_params(defaults, path)
    return {**defaults, **overrides} if overrides else defaults


def validate_job(
    raw: object,
    *,
    params: Mapping[str, Any] | None = None,
    templates: Mapping[str, Mapping[str, Any]] | None = None,
    allow_unresolved: bool = False,
) -> JobSpec:
    """Check a raw job (or bare step) and build its :class:`JobSpec`.

    ``params`` are the submit's parameters, laid over the job's own ``params`` defaults.
    ``templates`` resolves ``use`` steps. With ``allow_unresolved`` (define time), a
    ``${params.X}`` with no value is left as it is, even in a typed field: such a spec is only
    good for checking structure, never for running.

    Raises :class:`InvalidJob` naming the path of the offending step or key.
    """
    overrides: Mapping[str, Any] | None = None
    if params:
        _check_params(params, "params")
        overrides = dict(params)
    root = _PLAIN  # shared: building a validator per job was a sixth of validating `{"value": 1}`
    if templates or allow_unresolved:
        root = _Validator(_EMPTY, templates, allow_unresolved, ())
    try:
        return root.job(raw, "", overrides, (), 0)
    except _NeedsScope:
        return _validate_in_scope(root, raw, overrides)


def _validate_in_scope(
    root: _Validator, raw: object, overrides: Mapping[str, Any] | None
) -> JobSpec:
    """A job that refers to ``${job...}`` outside tasks: its body is validated again when the
    job starts, with the values (a :class:`Deferred` body; see _graph.py)."""
    scope = Scope()
    spec = root.with_refs(scope).job(raw, "", overrides, (), 0)
    if not scope.deferred:
        return spec
    later = Unit(
        raw, "", params=_EMPTY, templates=root.templates, chain=(), depth=0, overrides=overrides
    )
    return attrs.evolve(spec, body=Deferred(path="", body=spec.body, later=later))


def validate_template(
    raw: object,
    templates: Mapping[str, Mapping[str, Any]] | None,
    *,
    name: str | None = None,
) -> None:
    """Check a template for ``define``: its structure, leaving parameters without defaults.

    Given its ``name``, the check also sees the template as already defined under that name, so
    a cycle through the new definition (``a`` uses ``b`` uses ``a``) is caught at define time.
    """
    chain: tuple[str, ...] = ()
    if name is not None and isinstance(raw, Mapping):
        templates = {**(templates or {}), name: raw}
        chain = (name,)
    root = _Validator(_EMPTY, templates, True, ())
    try:
        root.job(raw, "", None, chain, 0)
    except _NeedsScope:
        root.with_refs(Scope()).job(raw, "", None, chain, 0)


def resolve_unit(unit: Unit, scope: Scope) -> Step:
    """Validate ``unit`` again under ``scope``, where its runtime references have values.

    The whole body of a job (``unit.graph`` None) or the steps of one task, as a ``Seq``.
    Raises :class:`InvalidJob` naming the field; the engine turns that into the unit's failure.
    """
    args = (unit.params, unit.templates, False, unit.chain)
    v = _Validator(*args, refs=scope, inherited=unit.inherited)
    if unit.graph is None:
        return v.job(unit.raw, unit.path, unit.overrides, unit.chain, unit.depth).body
    if unit.around is not None:
        v = v.under(unit.around, unit.path)
    steps = v._steps(unit.raw, unit.path, "steps", unit.depth, True)
    return Seq(path=unit.path, steps=steps)
