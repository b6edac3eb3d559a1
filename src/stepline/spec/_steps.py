"""The step kinds: one registry row each (key, spec class, parser, options), and the parsers.

:data:`STEP_KINDS` is the one table of what a step kind is; everything else in ``spec/`` derives
from it (the kind keys and the keys each kind allows, in :mod:`~stepline.spec._keys`; the parser
lookup of the validator). A new kind is a spec class in :mod:`~stepline.spec._model`, a parser
and a row here, then its interpreter in :data:`stepline.engine._interpret.INTERPRETERS`;
``tests/spec/test_step_kinds.py`` walks every row through every other table (the interpreters,
the ``stepline.steps`` builder, ``stepline graph``'s summaries) and fails on a kind one lacks.

:class:`~stepline.spec._validate.Validator` picks the parser by the step's kind key and hands it
the modifiers (``name``, ``timeout``, ``retry``) already parsed; a parser reads its own fields
through the field helpers (:mod:`stepline.spec._fields`) and recurses into nested steps through
:meth:`~stepline.spec._validate.Validator.step` and ``steps``, at ``depth + 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from attrs import frozen

from .._errors import InvalidJob
from .._lazy import loading
from .._record import ValueRecord
from ._fields import EMPTY, MISSING, without_nul
from ._inherit import NOTHING_INHERITED
from ._model import (
    Fail,
    Http,
    JobSpec,
    Log,
    Modifiers,
    Par,
    Race,
    Run,
    Seq,
    Sleep,
    Step,
    Try,
    Use,
    Value,
)
from ._signature import check_arguments
from ._text import at, describe, short

if TYPE_CHECKING:
    from ._fields import Fields
    from ._validate import Validator

__all__ = ["PARSERS", "STEP_KINDS", "Parser", "StepKind", "parse_run"]

Parser = Callable[["Validator", dict[str, Any], str, int, Modifiers], Step]
"""``(validator, raw step, its path, its depth, its modifiers) -> spec``."""

_PARSE_MODES: Final = ("json", "text", "lines")


def _sleep(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    return Sleep(path=path, mods=mods, seconds=v.number(raw["sleep"], path, "sleep"))


def _value(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    return Value(path=path, mods=mods, value=v.json_field(raw["value"], path, "value"))


def _log(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    return Log(path=path, mods=mods, message=v.string(raw["log"], path, "log"))


def _fail(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    return Fail(path=path, mods=mods, message=v.string(raw["fail"], path, "fail"))


def parse_run(v: Fields, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    """A ``run`` step (also the ``run`` callback's options: same rules, same paths)."""
    argv = _argv(v, raw["run"], path)
    around = v.inherited
    if len(raw) == 1 and around is NOTHING_INHERITED:
        return Run(path=path, mods=mods, argv=argv)
    get = raw.get
    env, cwd, stdin, grace = get("env", MISSING), get("cwd"), get("stdin"), get("grace")
    return Run(
        path=path,
        mods=mods,
        argv=argv,
        env=around.run_env(None if env is MISSING else v.env(env, path)),
        cwd=around.run_cwd(None if "cwd" not in raw else v.string(cwd, path, "cwd", no_nul=True)),
        stdin=None if "stdin" not in raw else v.string(stdin, path, "stdin"),
        grace=5.0 if "grace" not in raw else v.number(grace, path, "grace"),
        stream=v.flag(raw, path, "stream"),
        parse=None if "parse" not in raw else _parse_mode(v, raw["parse"], path),
        limits=v.limits(raw, path),
        runner=v.runner(raw, path),
        network=bool(v.flag(raw, path, "network")),
    )


def _parse_mode(v: Fields, raw: object, path: str) -> str:
    """A ``run``'s ``parse``: ``json``, ``text`` or ``lines``."""
    mode = v.string(raw, path, "parse")
    if mode not in _PARSE_MODES and not v.lenient(mode):
        raise InvalidJob(
            at(path, "parse"), f"expected one of 'json', 'text', 'lines', got {short(mode)}"
        )
    return mode


def _seq(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    steps = v.steps(raw["seq"], path, "seq", depth + 1, True)
    return Seq(path=path, mods=mods, steps=steps)


def _par(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    steps = v.steps(raw["par"], path, "par", depth + 1, False)
    limit = v.count(raw["limit"], path, "limit", 1) if "limit" in raw else None
    return Par(path=path, mods=mods, steps=steps, limit=limit)


def _race(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    steps = v.steps(raw["race"], path, "race", depth + 1, False)
    return Race(path=path, mods=mods, steps=steps)


def _try(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    body = v.step(raw["try"], at(path, "try"), depth + 1)
    catch = v.step(raw["catch"], at(path, "catch"), depth + 1) if "catch" in raw else None
    return Try(path=path, mods=mods, body=body, catch=catch)


def _use(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    name = v.string(raw["use"], path, "use")
    args = _with(v, raw.get("with", MISSING), path)
    job = _expand(v, name, args, path, depth)
    return Use(path=path, mods=mods, template=name, job=job, args=args)


def _http(v: Validator, raw: dict[str, Any], path: str, depth: int, mods: Modifiers) -> Step:
    with loading("http steps"):
        from ._http import parse_http  # start-up time: only jobs with `http` steps need it

    return parse_http(v, raw, path, depth, mods)


@frozen(repr=False, eq=False)
class StepKind(ValueRecord):
    """One step kind: the key that names it, its spec class, its parser, and the options a step
    of this kind takes besides the kind key and the modifiers (``name``, ``timeout``, ``retry``)."""

    key: str
    spec: type[Step]
    parse: Parser
    options: tuple[str, ...] = ()


_RUN_OPTIONS: Final = (
    *("env", "cwd", "stdin", "grace", "stream", "parse", "limits", "runner", "network"),
)

STEP_KINDS: Final[Mapping[str, StepKind]] = {
    kind.key: kind
    for kind in (
        StepKind("sleep", Sleep, _sleep),
        StepKind("value", Value, _value),
        StepKind("log", Log, _log),
        StepKind("fail", Fail, _fail),
        StepKind("run", Run, parse_run, _RUN_OPTIONS),
        StepKind("seq", Seq, _seq),
        StepKind("par", Par, _par, ("limit",)),
        StepKind("race", Race, _race),
        StepKind("try", Try, _try, ("catch",)),
        StepKind("use", Use, _use, ("with",)),
        StepKind("http", Http, _http),
    )
}
"""Every step kind, by its key."""

PARSERS: Final[Mapping[str, Parser]] = {key: kind.parse for key, kind in STEP_KINDS.items()}
"""The parser of each kind key: the validator's hot-path lookup (one dict access)."""


# -- run and use details -----------------------------------------------------------------------


def _argv(v: Fields, raw: object, path: str) -> tuple[str, ...]:
    """A ``run``: a shell line becomes ``/bin/sh -c line``; a list is argv as is."""
    value = v.resolve(raw, path, "run")
    if type(value) is str:
        if not value:
            raise InvalidJob(at(path, "run"), "a shell line must not be empty")
        return ("/bin/sh", "-c", without_nul(value, path, "run"))
    if type(value) is not list or not value:
        got = "an empty list" if type(value) is list else describe(value)
        raise InvalidJob(at(path, "run"), f"expected a list of strings or a shell line, got {got}")
    check = v if value is raw else v.literal
    argv: list[str] = []
    for i, item in enumerate(value):
        _arg(check, argv, item, path, i)
    if not argv:
        raise InvalidJob(at(path, "run"), "no arguments left once the lists were spliced in")
    if not argv[0]:
        raise InvalidJob(at(path, "run[0]"), "the program name must not be empty")
    return tuple(argv)


def _arg(v: Fields, argv: list[str], item: object, path: str, i: int) -> None:
    """One argv element, appended to ``argv``: a string, or the strings of a list that a
    ``${...}`` standing alone resolved to (spliced in). The fast path avoids building a
    path that is only used on errors."""
    if type(item) is str and "$" not in item and "\0" not in item:
        argv.append(item)
        return
    key = f"run[{i}]"
    value = v.resolve(item, path, key)
    if type(value) is list:
        argv.extend(_spliced(value, at(path, key)))
    elif type(value) is str:
        argv.append(without_nul(value, path, key))
    elif (type(value) is int or type(value) is float) and value is not item:
        argv.append(orjson.dumps(value).decode())  # `${matrix.shard}` standing alone
    else:
        raise InvalidJob(at(path, key), f"expected a string, got {describe(value)}")


def _spliced(values: list[Any], where: str) -> list[str]:
    """A list spliced into an argv: strings, or numbers written as JSON text."""
    out: list[str] = []
    for j, value in enumerate(values):
        if type(value) is str and "\0" not in value:
            out.append(value)
        elif type(value) is int or type(value) is float:
            out.append(orjson.dumps(value).decode())
        else:
            got = "a string holding NUL" if type(value) is str else describe(value)
            raise InvalidJob(f"{where}[{j}]", f"expected a string or a number to splice, got {got}")
    return out


def _with(v: Validator, raw: object, path: str) -> Mapping[str, Any]:
    """``with``: any JSON object, substituted in this job's params, for the template's."""
    if raw is MISSING:
        return EMPTY
    value = v.json_field(raw, path, "with")
    if type(value) is dict:
        return value
    if v.lenient(value):
        return EMPTY  # define time: the arguments are not known yet
    raise InvalidJob(at(path, "with"), f"expected an object, got {describe(value)}")


def _expand(v: Validator, name: str, args: Mapping[str, Any], path: str, depth: int) -> JobSpec:
    """The template's job, validated with its defaults under ``args``, at ``path.use``."""
    where = at(path, "use")
    if v.lenient(name):  # define time: which template is not known yet
        return JobSpec(body=Seq(path=where, steps=()))
    if name in v.chain:
        cycle = (*v.chain[v.chain.index(name) :], name)
        raise InvalidJob(where, "template cycle: " + " -> ".join(cycle))
    raw = None if v.templates is None else v.templates.get(name)
    if raw is None:
        raise InvalidJob(where, f"unknown template {short(name)}")
    check_arguments(name, raw, args, at(path, "with"))
    inner = v if v.refs is None else v.with_refs(v.refs.for_template())
    return inner.job(raw, where, args, (*v.chain, name), depth)
