"""The ``run`` policy: which programs a job may start (``--allow-run``).

A separate pass over an already validated :class:`~stepline.spec._model.JobSpec`, run by
:meth:`Executor.submit <stepline.engine._executor.Executor.submit>` and ``define`` before a job is
accepted. Keeping it out of the validator keeps one concern per module: the validator decides
what a job *means*, this pass decides whether this executor *may* run it. Because it walks the
validated spec, it sees parameters already substituted and ``use`` steps already expanded: a
parameter or a template cannot smuggle in a program the policy forbids.

An allowlist entry is compared with ``argv[0]`` exactly, as written in the job (a shell line's
program is ``/bin/sh``). No resolution happens here, so ``echo`` does not allow
``/tmp/x/echo``. A bare name is found through ``PATH`` when the child starts, and the child's
``PATH`` is the job's ``env`` over stepline's own; so is the dynamic loader's configuration.
A job that could set those would choose *which* file an allowed name runs, or inject code into
it, so under a restrictive policy :data:`LOADER_ENV` variables may not be set in ``env``.

This is an allowlist of programs, not a sandbox: an allowed program runs with the arguments,
environment, working directory and stdin the driver chose. Allowing a shell, an interpreter or
any program that runs others (``env``, ``xargs``, ``find``) allows everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final, TypeAlias, cast

import attrs

from .._errors import InvalidJob
from ._model import Fail, JobSpec, Log, Modifiers, Retry, Run, Sleep, Value

__all__ = [
    "LOADER_ENV",
    "AllowRun",
    "check_run_policy",
    "describe_allow_run",
    "parse_allow_run",
    "refusal",
]

AllowRun: TypeAlias = frozenset[str] | None
"""``None`` allows every program; a set allows exactly those ``argv[0]`` (empty: no ``run``)."""

LOADER_ENV: Final = frozenset({"PATH", "GCONV_PATH"})
"""Variables that choose which file runs or what code gets loaded into it (plus every ``LD_*``)."""


def parse_allow_run(value: str | Iterable[str] | None) -> AllowRun:
    """``"all"``/``None`` → ``None``; ``"none"`` → empty; ``"a,b"`` or an iterable → those names.

    Raises ``ValueError`` for an empty entry (``"a,,b"``): silently dropping it would hide a typo.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value == "all":
            return None
        if value == "none":
            return frozenset()
        value = value.split(",")
    names = frozenset(value)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"--allow-run entries must be non-empty program names, got {value!r}")
    return names


def describe_allow_run(allow: AllowRun) -> str:
    """The policy as the command line would spell it (for messages and ``ready``-like output)."""
    if allow is None:
        return "all"
    return ",".join(sorted(allow)) or "none"


def check_run_policy(spec: JobSpec, allow: AllowRun, *, unresolved_ok: bool = False) -> None:
    """Raise :class:`InvalidJob` at the first ``run`` step the policy forbids.

    ``unresolved_ok`` is for ``define``: a program still spelt ``${params.X}`` is only known at
    submit time, where the check runs again on the resolved spec.
    """
    if allow is None:
        return  # the default: nothing to check, and no cost on the submit hot path
    for step in _run_steps(spec):  # the whole spec: body, and whatever else may hold steps
        _check_one(step, allow, unresolved_ok)


def refusal(step: Run, allow: AllowRun) -> InvalidJob | None:
    """Why the policy forbids this ``run`` step (path and message), or None if it may run.

    Also the last gate before a process starts (``_interpret``): a step built only at run time,
    from a reference such as ``${tasks.a.output}``, is checked there, since submit saw only the
    reference.
    """
    if allow is None:
        return None
    program = step.argv[0]
    if program not in allow:
        rule = "no program may be run" if not allow else "not in the allowed list"
        where = f"{step.path}.run" if step.path else "run"
        return InvalidJob(where, f"program {program!r} is not allowed by --allow-run ({rule})")
    env = step.env if isinstance(step.env, Mapping) else {}  # define time: maybe "${params.e}"
    for name in env:
        if name in LOADER_ENV or name.startswith("LD_"):
            return InvalidJob(
                f"{step.path}.env" if step.path else "env",
                f"{name!r} may not be set when --allow-run restricts programs: "
                "it changes which program runs or what code it loads",
            )
    return None


def _check_one(step: Run, allow: frozenset[str], unresolved_ok: bool) -> None:
    if unresolved_ok and _unresolved(step.argv):
        return
    problem = refusal(step, allow)
    if problem is not None:
        raise problem


def _unresolved(argv: tuple[str, ...]) -> bool:
    """Define time: the program is a parameter (``["${params.p}"]``, or ``"${params.cmd}"``,
    which may become an argv list), so it is only known, and checked, at submit time."""
    if "${" in argv[0]:
        return True
    return argv[:2] == ("/bin/sh", "-c") and _WHOLE_PARAM.fullmatch(argv[2]) is not None


_WHOLE_PARAM: Final = re.compile(r"\$\{params\.[A-Za-z_][A-Za-z0-9_]*\}")


def _run_steps(root: object) -> Iterator[Run]:
    """Every ``run`` step below ``root``, depth first, iteratively (no recursion limit).

    Known leaves are skipped and ``Run`` is yielded; any other attrs object (``seq``, ``par``,
    ``try``, ``use``'s job, and step kinds added later such as DAG tasks or callbacks) is
    searched through all of its fields. Failing closed this way means a new composite kind can
    never hide a ``run`` step from the policy because nobody remembered to update this walker.
    """
    stack: list[object] = [root]
    while stack:
        current = stack.pop()
        if isinstance(current, Run):
            yield current
        elif isinstance(current, _LEAVES):
            continue
        elif attrs.has(type(current)):
            stack.extend(_attrs_children(current))
        elif isinstance(current, tuple | list):
            stack.extend(item for item in reversed(current) if _may_hold_steps(item))
        elif isinstance(current, Mapping):
            stack.extend(item for item in current.values() if _may_hold_steps(item))


_LEAVES: Final = (Sleep, Value, Log, Fail, Modifiers, Retry)


def _attrs_children(obj: object) -> list[object]:
    fields = attrs.fields(cast("type[attrs.AttrsInstance]", type(obj)))
    values = [getattr(obj, f.name) for f in fields if f.name != "params"]
    return [v for v in reversed(values) if _may_hold_steps(v)]


def _may_hold_steps(value: object) -> bool:
    return attrs.has(type(value)) or isinstance(value, tuple | list | Mapping)
