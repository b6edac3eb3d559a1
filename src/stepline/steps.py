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
    "alert",
    "fail",
    "http",
    "job",
    "log",
    "named",
    "notify",
    "par",
    "race",
    "retry",
    "run",
    "run_callback",
    "seq",
    "sleep",
    "task",
    "timeout",
    "try_",
    "use",
    "value",
    "webhook",
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


def http(
    url: str,
    *,
    method: str | None = None,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    body: str | None = None,
    expect: Sequence[int] | None = None,
) -> Step:
    """Send an HTTP request; output ``{"status", "headers", "body"}`` (``body`` parsed when it
    is JSON). ``json`` is sent as ``application/json``, ``body`` as text (give at most one);
    ``method`` defaults to GET, or POST with a body; ``expect`` lists the statuses that count as
    success (default: any 2xx)."""
    options = _given(
        method=method,
        headers=dict(headers) if headers is not None else None,
        json=json,
        body=body,
        expect=list(expect) if expect is not None else None,
    )
    return {"http": {"url": url, **options}}


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


# -- callbacks: what a job's on_finish runs after its finished ------------------------------------


def notify(text: str, *, when: str | None = None) -> dict[str, Any]:
    """A ``notification`` event with the job's outcome and ``text``. ``when``: ``success``,
    ``failure`` or ``always`` (the default)."""
    return {"notify": text, **_given(when=when)}


def alert(text: str, *, when: str | None = None) -> dict[str, Any]:
    """An ``alert`` event, repeated until it is acked."""
    return {"alert": text, **_given(when=when)}


def webhook(
    url: str,
    *,
    when: str | None = None,
    headers: Mapping[str, str] | None = None,
    payload: Mapping[str, Any] | None = None,
    method: str | None = None,
    timeout: float | None = None,
    retry: int | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP request carrying the job's outcome (POST by default; ``payload`` is merged into
    the body), retried on connection errors, 429 and 5xx."""
    if isinstance(retry, int):
        retry = _retry(retry, None, None)
    options = _given(
        when=when,
        headers=dict(headers) if headers is not None else None,
        payload=dict(payload) if payload is not None else None,
        method=method,
        timeout=timeout,
        retry=dict(retry) if retry is not None else None,
    )
    return {"webhook": url, **options}


def run_callback(
    command: str | Sequence[str],
    *,
    when: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    grace: float | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A program that reads the ``finished`` event on its stdin (argv, or a shell line)."""
    argv: str | list[str] = command if isinstance(command, str) else list(command)
    options = _given(
        when=when,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        grace=grace,
        timeout=timeout,
    )
    return {"run": argv, **options}


# -- the job -----------------------------------------------------------------------------------


def task(
    *steps: Mapping[str, Any],
    needs: str | Sequence[str] | None = None,
    if_: str | bool | None = None,
    matrix: Mapping[str, Sequence[Any]] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    """One task of a job's ``tasks``: ``steps`` in sequence, once the tasks it ``needs`` are
    done; ``if_`` (``success``, ``failure``, ``always`` or a boolean ``${params.X}``) says when it
    runs; ``matrix`` runs one instance per combination of values."""
    if isinstance(needs, str):
        needs = [needs]
    options = _given(
        needs=list(needs) if needs is not None else None,
        matrix={k: list(v) for k, v in matrix.items()} if matrix is not None else None,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    if if_ is not None:
        options["if"] = if_
    return {"steps": _steps(steps, "task"), **options}


def job(
    *steps: Mapping[str, Any],
    name: str | None = None,
    timeout: float | None = None,
    retry: int | Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    stream: bool | None = None,
    tasks: Mapping[str, Mapping[str, Any]] | None = None,
    limit: int | None = None,
    on_finish: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A job: ``steps`` in sequence, or named ``tasks`` (see :func:`task`; ``limit`` caps how
    many run at once), with a name, a job-level ``timeout`` (expiry: state ``timed_out``),
    ``retry`` of the whole job (attempts, or ``{"attempts", "backoff", "factor"}``), default
    ``params`` for ``${params.NAME}``, ``stream``, the default of its ``run`` steps, and
    ``on_finish`` callbacks (:func:`notify`, :func:`alert`, :func:`webhook`,
    :func:`run_callback`)."""
    if steps and tasks is not None:
        raise TypeError("job() takes steps or tasks=, not both")
    if isinstance(retry, int):
        retry = _retry(retry, None, None)
    options = _given(
        name=name,
        timeout=timeout,
        retry=dict(retry) if retry is not None else None,
        params=dict(params) if params is not None else None,
        stream=stream,
        limit=limit,
        on_finish=[dict(c) for c in on_finish] if on_finish is not None else None,
    )
    if tasks is not None:
        return {"tasks": {key: dict(t) for key, t in tasks.items()}, **options}
    return {"steps": _steps(steps, "job"), **options}
