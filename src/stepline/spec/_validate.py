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

The work is split by concept: :mod:`~stepline.spec._fields` reads typed fields and substitutes
references (the helpers every parser uses), :mod:`~stepline.spec._steps` holds one parser per
step kind, :mod:`~stepline.spec._graph` parses ``tasks``, :mod:`~stepline.spec._keys` knows which
keys go where; this module is the descent over a job and the entry points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import attrs

from .._errors import InvalidJob
from .._lazy import loading
from ._fields import EMPTY, MAX_JSON_DEPTH, MISSING, Fields, NeedsScope
from ._graph import parse_job_body
from ._keys import JOB_KEYS, KINDS, kind_of, unknown_key
from ._model import NO_MODIFIERS, Deferred, JobSpec, Modifiers, Run, Seq, Step, Value
from ._refs import Scope, Unit
from ._steps import PARSERS
from ._text import at, describe, key_suffix, show_key

if TYPE_CHECKING:
    from ._callbacks import Callback

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_STEP_DEPTH",
    "NOT_A_VALUE",
    "Validator",
    "resolve_unit",
    "validate_job",
    "validate_template",
    "value_job",
    "value_spec",
]

MAX_STEP_DEPTH: Final = 64
"""Steps may nest this many levels (a job's own steps are level 1; templates count too)."""


class Validator(Fields):
    """The descent over one job's steps: :class:`~stepline.spec._fields.Fields` (the job's
    parameters, templates and scope, and its typed fields) plus jobs and steps.

    Parsers of nested structures (:mod:`~stepline.spec._steps`, ``tasks``, callbacks) take a
    validator and call back into :meth:`job`, :meth:`step` and :meth:`steps`.
    """

    __slots__ = ()

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
        if "steps" not in raw and "tasks" not in raw and not KINDS.isdisjoint(raw):
            v = self.for_job(overrides or EMPTY, chain)
            step = v.step(raw, at(base, "steps[0]"), depth + 1)
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
            if key not in JOB_KEYS:
                raise InvalidJob(base, unknown_key(key, job=True))
        if "hook" in raw and type(raw["hook"]) is not bool:
            raise InvalidJob(
                at(base, "hook"), f"expected true or false, got {describe(raw['hook'])}"
            )
        v = self.for_job(_merge_params(raw.get("params", MISSING), overrides, base), chain)
        body = parse_job_body(v.under(raw, base), raw, base, depth)  # `steps` or `tasks`
        mods = v.modifiers(raw, base)
        on_finish = _on_finish(v, raw["on_finish"], base) if "on_finish" in raw else ()
        return JobSpec(
            body=body,
            name=mods.name,
            timeout=mods.timeout,
            retry=mods.retry,
            params=v.params,
            on_finish=on_finish,
            keep_workspace=v.flag(raw, base, "keep_workspace") or False,
            stream=v.flag(raw, base, "stream"),
            artifacts=_artifacts(v, raw["artifacts"], base) if "artifacts" in raw else (),
            limits=v.limits(raw, base),
            runner=v.runner(raw, base),
        )

    # -- steps -------------------------------------------------------------------------------

    def step(self, raw: object, path: str, depth: int) -> Step:
        """One step at ``path``, nested ``depth`` levels deep. Hot path: one key, no modifiers."""
        if type(raw) is not dict:
            return self._indirect_step(raw, path, depth)
        if depth > MAX_STEP_DEPTH:
            raise InvalidJob(path, f"steps nested deeper than {MAX_STEP_DEPTH} levels")
        if len(raw) == 1:
            for only in raw:
                parse = PARSERS.get(only)
                if parse is not None:
                    return parse(self, raw, path, depth, NO_MODIFIERS)
        kind = kind_of(raw, path)
        return PARSERS[kind](self, raw, path, depth, self.modifiers(raw, path))

    def _indirect_step(self, raw: object, path: str, depth: int) -> Step:
        """A step given as ``"${params.s}"`` (checked literally), or not a step at all."""
        v = self.resolve(raw, path, "")
        if type(v) is dict:
            return self.literal.step(v, path, depth)
        if self.lenient(v):
            return cast(Step, v)
        raise InvalidJob(path, f"a step must be an object, got {describe(raw)}")

    def steps(
        self, raw: object, path: str, key: str, depth: int, empty_ok: bool
    ) -> tuple[Step, ...]:
        """A list of steps at ``path.key[i]``, each nested ``depth`` levels deep."""
        if type(raw) is not list:
            return self._indirect_steps(raw, path, key, depth, empty_ok)
        if not raw and not empty_ok:
            raise InvalidJob(at(path, key), "must not be empty")
        prefix = f"{path}.{key}" if path else key
        step = self.step
        return tuple([step(item, f"{prefix}[{i}]", depth) for i, item in enumerate(raw)])

    def _indirect_steps(
        self, raw: object, path: str, key: str, depth: int, empty_ok: bool
    ) -> tuple[Step, ...]:
        """A list of steps given as ``"${params.s}"`` (checked literally), or not a list."""
        v = self.resolve(raw, path, key)
        if type(v) is list:
            return self.literal.steps(v, path, key, depth, empty_ok)
        if self.lenient(v):
            return cast(tuple[Step, ...], v)
        raise InvalidJob(at(path, key), f"expected a list of steps, got {describe(v)}")

    def modifiers(self, raw: Mapping[Any, Any], path: str) -> Modifiers:
        """``name``, ``timeout`` and ``retry`` of a step (or of a job, at its base path)."""
        name = raw.get("name", MISSING)
        timeout = raw.get("timeout", MISSING)
        retry = raw.get("retry", MISSING)
        if name is MISSING and timeout is MISSING and retry is MISSING:
            return NO_MODIFIERS
        return Modifiers(
            None if name is MISSING else self.string(name, path, "name"),
            None if timeout is MISSING else self.number(timeout, path, "timeout"),
            None if retry is MISSING else self.retry(retry, path, "retry"),
        )


def _on_finish(v: Validator, raw: object, path: str) -> tuple[Callback, ...]:
    with loading("callbacks"):
        from ._callbacks import parse_on_finish  # start-up time: only jobs with callbacks

    return parse_on_finish(v, raw, path)


def _artifacts(v: Validator, raw: object, base: str) -> tuple[str, ...]:
    with loading("artifacts"):
        from ._artifacts import parse_artifacts  # start-up time: only jobs with artifacts

    return parse_artifacts(v, raw, base)


_PLAIN: Final = Validator(EMPTY, None, False, ())
"""The validator of the common case (no params, no templates): shared, it holds no state."""

_CHECKER: Final = _PLAIN.literal
"""Checks parameter values as JSON data without substituting anything in them."""


def _job_object(raw: object, base: str) -> dict[Any, Any]:
    """A job must be a JSON object (any Mapping from a Python caller is copied into a dict)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    raise InvalidJob(base, f"a job must be an object, got {describe(raw)}")


def _check_params(params: Mapping[Any, Any], path: str) -> None:
    """Parameter values must be encodable JSON data, since they end up in outputs and text."""
    for key, value in params.items():
        if type(key) is not str:
            raise InvalidJob(path, f"parameter names must be strings, got {show_key(key)}")
        _CHECKER.json_at(value, f"{path}{key_suffix(key)}")


def _merge_params(
    defaults: object, overrides: Mapping[str, Any] | None, base: str
) -> Mapping[str, Any]:
    """The effective params of a job: its own defaults (never substituted) under overrides."""
    if defaults is MISSING:
        return overrides or EMPTY
    path = at(base, "params")
    if type(defaults) is not dict:
        raise InvalidJob(path, f"expected an object, got {describe(defaults)}")
    if not defaults:
        return overrides or EMPTY
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
    if type(raw) is dict and len(raw) == 1 and "run" in raw and not (params or templates):
        spec = _plain_run_job(raw["run"]) if not allow_unresolved else None
        if spec is not None:
            return spec
    overrides: Mapping[str, Any] | None = None
    if params:
        _check_params(params, "params")
        overrides = dict(params)
    root = _PLAIN  # shared: building a validator per job was a sixth of validating `{"value": 1}`
    if templates or allow_unresolved:
        root = Validator(EMPTY, templates, allow_unresolved, ())
    try:
        return root.job(raw, "", overrides, (), 0)
    except NeedsScope:
        return _validate_in_scope(root, raw, overrides)


_RUN_SPECS: dict[tuple[str, ...], JobSpec] = {}
"""The specs of the latest plain ``run`` jobs (:func:`_plain_run_job`), by argv."""
_RUN_SPECS_KEPT: Final = 256
_RUN_SPEC_ARGV_CHARS: Final = 1024  # a longer argv is not kept: the cache stays small


def _plain_run_job(run: object) -> JobSpec | None:
    """The spec :func:`validate_job` makes of ``{"run": run}``, when ``run`` is a list of
    strings or a shell line with no ``$`` (nothing to substitute) and nothing to refuse (no
    NUL, no empty program); None for anything else (the general path checks it, and says why
    it is refused).

    Why: a ``{"run": [...]}`` job is the commonest process job, and building its two frozen
    objects (``JobSpec``, ``Run``) was two thirds of validating it (7 of 11 µs). They are
    frozen, compared by identity nowhere, and hold nothing of the job but its argv, so jobs
    with the same argv share one: the latest :data:`_RUN_SPECS_KEPT` short ones are kept.
    """
    if type(run) is list:
        if not run or not run[0]:
            return None
        for item in run:
            if type(item) is not str or "$" in item or "\0" in item:
                return None
        argv = tuple(run)
    elif type(run) is str and run and "$" not in run and "\0" not in run:
        argv = ("/bin/sh", "-c", run)
    else:
        return None
    spec = _RUN_SPECS.get(argv)
    if spec is None:
        spec = JobSpec(body=Run(path="steps[0]", mods=NO_MODIFIERS, argv=argv), params=EMPTY)
        if sum(map(len, argv)) <= _RUN_SPEC_ARGV_CHARS:
            if len(_RUN_SPECS) >= _RUN_SPECS_KEPT:
                del _RUN_SPECS[next(iter(_RUN_SPECS))]  # the oldest
            _RUN_SPECS[argv] = spec
    return spec


NOT_A_VALUE: Final = object()
"""What :func:`value_job` returns for a job that is not a plain ``{"value": v}``."""


def value_job(raw: object) -> Any:
    """The checked value of a job that is one bare ``value`` step, else :data:`NOT_A_VALUE`.

    The commonest job, ``{"value": v}`` with no params or templates, checked exactly as
    :func:`validate_job` checks it (the same depth, size and range caps on ``v``, the same
    substitution) without building its frozen spec objects, which were half the cost of
    validating it; :func:`value_spec` builds that spec, equal to :func:`validate_job`'s, when
    someone asks for it. A ``v`` that is refused, or that refers to ``${job...}``, is not a
    value here: :func:`validate_job` says why, or defers it.
    """
    if type(raw) is not dict or len(raw) != 1 or "value" not in raw:
        return NOT_A_VALUE
    try:
        return _PLAIN.json_field(raw["value"], "steps[0]", "value")
    except (InvalidJob, NeedsScope):
        return NOT_A_VALUE


def value_spec(value: Any) -> JobSpec:
    """The spec :func:`validate_job` makes of ``{"value": raw}``, where :func:`value_job`
    checked ``raw`` into ``value``."""
    return JobSpec(body=Value(path="steps[0]", mods=NO_MODIFIERS, value=value), params=EMPTY)


def _validate_in_scope(
    root: Validator, raw: object, overrides: Mapping[str, Any] | None
) -> JobSpec:
    """A job that refers to ``${job...}`` outside tasks: its body is validated again when the
    job starts, with the values (a :class:`Deferred` body; see _graph.py)."""
    scope = Scope()
    spec = root.with_refs(scope).job(raw, "", overrides, (), 0)
    if not scope.deferred:
        return spec
    later = Unit(
        raw, "", params=EMPTY, templates=root.templates, chain=(), depth=0, overrides=overrides
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
    root = Validator(EMPTY, templates, True, ())
    try:
        root.job(raw, "", None, chain, 0)
    except NeedsScope:
        root.with_refs(Scope()).job(raw, "", None, chain, 0)


def resolve_unit(unit: Unit, scope: Scope) -> Step:
    """Validate ``unit`` again under ``scope``, where its runtime references have values.

    The whole body of a job (``unit.graph`` None) or the steps of one task, as a ``Seq``.
    Raises :class:`InvalidJob` naming the field; the engine turns that into the unit's failure.
    """
    args = (unit.params, unit.templates, False, unit.chain)
    v = Validator(*args, refs=scope, inherited=unit.inherited)
    if unit.graph is None:
        return v.job(unit.raw, unit.path, unit.overrides, unit.chain, unit.depth).body
    if unit.around is not None:
        v = v.under(unit.around, unit.path)
    steps = v.steps(unit.raw, unit.path, "steps", unit.depth, True)
    return Seq(path=unit.path, steps=steps)
