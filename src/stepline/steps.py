"""Build job specs in Python: plain dicts, exactly the JSON of the wire protocol.

::

    from stepline import steps as s

    job = s.job(
        s.run(["make"]),
        s.retry(s.run("curl -fsS https://example.com/health"), attempts=3, backoff=1),
        s.par(s.run("make test-a"), s.run("make test-b"), limit=2),
        name="ci",
        timeout=600,
    )

Every function returns a new ``dict`` and never changes its arguments, so steps can be shared
and reused. Nothing is validated here beyond catching the easy slip of passing a list where the
steps are separate arguments (``seq([a, b])``): the executor validates the whole job at submit
time, with the path of whatever is wrong. Options left at ``None`` are left out of the JSON, so
the executor's own defaults apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

__all__ = [
    "Step",
    "fail",
    "job",
    "log",
    "named",
    "par",
    "race",
    "retry",
    "run",
    "seq",
    "sleep",
    "timeout",
    "try_",
    "use",
    "value",
]

Step: TypeAlias = dict[str, Any]
"""A step as JSON: one kind key (``run``, ``seq``, ...) plus options and modifiers."""


def _given(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _step(step: Mapping[str, Any], where: str) -> Step:
    if not isinstance(step, Mapping):
        raise TypeError(f"{where} takes steps (dicts), got {type(step).__name__}: {step!r}")
    return dict(step)


def _steps(steps: Sequence[Mapping[str, Any]], where: str) -> list[Step]:
    return [_step(step, f"{where}()") for step in steps]


# -- leaves ------------------------------------------------------------------------------------


def sleep(seconds: float) -> Step:
    """Wait ``seconds``; output null."""
    return {"sleep": seconds}


def value(result: Any) -> Step:
    """Output ``result`` (any JSON)."""
    return {"value": result}


def log(message: str) -> Step:
    """Emit a ``log`` event; output null."""
    return {"log": message}


def fail(message: str) -> Step:
    """Fail with error type ``fail``."""
    return {"fail": message}


def run(
    command: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: str | None = None,
    grace: float | None = None,
    stream: bool | None = None,
) -> Step:
    """Run a program: an argv list, or a string for ``/bin/sh -c``.

    Output ``{"exit", "stdout", "stderr"}``; a non-zero exit fails the step. ``grace`` is the
    seconds between SIGTERM and SIGKILL when the step is stopped. ``stream`` emits each line
    as an ``output`` event as it is written (None: the job's or the executor's choice).
    """
    argv: str | list[str] = command if isinstance(command, str) else list(command)
    options = _given(
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=stdin,
        grace=grace,
        stream=stream,
    )
    return {"run": argv, **options}


# -- combinators -------------------------------------------------------------------------------


def seq(*steps: Mapping[str, Any]) -> Step:
    """Run steps one after another; output the last one's."""
    return {"seq": _steps(steps, "seq")}


def par(*steps: Mapping[str, Any], limit: int | None = None) -> Step:
    """Run steps at once (at most ``limit`` at a time); output the list of outputs, in order.
    The first failure cancels the rest."""
    return {"par": _steps(steps, "par"), **_given(limit=limit)}


def race(*steps: Mapping[str, Any]) -> Step:
    """Run steps at once; output the first success's, cancelling the others."""
    return {"race": _steps(steps, "race")}


def try_(step: Mapping[str, Any], catch: Mapping[str, Any] | None = None) -> Step:
    """Output ``step``'s output or, if it fails, ``catch``'s (null without a ``catch``).
    (Named ``try_`` because ``try`` is a Python keyword.)"""
    out: Step = {"try": _step(step, "try_()")}
    if catch is not None:
        out["catch"] = _step(catch, "try_(catch=)")
    return out


def use(template: str, /, **params: Any) -> Step:
    """Run a template defined with ``define``, with ``params``; output the template's."""
    return {"use": template, **({"with": params} if params else {})}


# -- modifiers ---------------------------------------------------------------------------------


def retry(
    step: Mapping[str, Any],
    attempts: int,
    *,
    backoff: float | None = None,
    factor: float | None = None,
) -> Step:
    """At most ``attempts`` tries in all; before try k+1 wait ``backoff * factor**(k-1)``
    (executor defaults: backoff 0, factor 2). A ``timeout`` on the step bounds each try."""
    return {**_step(step, "retry()"), "retry": _retry(attempts, backoff, factor)}


def timeout(step: Mapping[str, Any], seconds: float) -> Step:
    """Fail the step with error type ``timeout`` if it runs longer than ``seconds``."""
    return {**_step(step, "timeout()"), "timeout": seconds}


def named(step: Mapping[str, Any], name: str) -> Step:
    """Name the step: errors from it carry the name, and trace events show it."""
    return {**_step(step, "named()"), "name": name}


def _retry(attempts: int, backoff: float | None, factor: float | None) -> dict[str, Any]:
    return {"attempts": attempts, **_given(backoff=backoff, factor=factor)}


# -- the job -----------------------------------------------------------------------------------


def job(
    *steps: Mapping[str, Any],
    name: str | None = None,
    timeout: float | None = None,
    retry: int | Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    stream: bool | None = None,
) -> dict[str, Any]:
    """A job: ``steps`` in sequence, with a name, a job-level ``timeout`` (expiry: state
    ``timed_out``), ``retry`` of the whole job (attempts, or ``{"attempts", "backoff",
    "factor"}``), default ``params`` for ``${params.NAME}`` and ``stream``, the default of its
    ``run`` steps."""
    if isinstance(retry, int):
        retry = _retry(retry, None, None)
    options = _given(
        name=name,
        timeout=timeout,
        retry=dict(retry) if retry is not None else None,
        params=dict(params) if params is not None else None,
        stream=stream,
    )
    return {"steps": _steps(steps, "job"), **options}
