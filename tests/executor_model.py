"""A reference model of how a job runs: its outcome and its duration, computed, not executed.

The stateful test runs jobs on trio's mock clock, where time is exact, and compares what the
executor reports against this model. The model walks the *validated* spec (so it checks the
interpreters and the executor, not the validator) with plain arithmetic on exact fractions:

* a step's outcome is ``Ok(value, t)`` or ``Err(type, step, name, t)``, ``t`` seconds after the
  step started;
* ``retry`` around ``timeout`` around the kind, exactly as PROTOCOL.md defines the modifiers;
* ``par`` starts every branch at once and ends at the first failure or the last success,
  ``race`` ends at the first success or, when every branch fails, with the first failure.

Where the protocol leaves the result open — two events at the same instant (a deadline equal to
a step's duration, two ``race`` branches succeeding at once, two ``par`` branches failing at
once) or a ``par`` with a ``limit`` (which branches get a slot first is up to the scheduler) —
the model returns :data:`AMBIGUOUS` and the test checks only the invariants for that job.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any, Final

import attrs

from stepline.spec._model import (
    Fail,
    JobSpec,
    Log,
    Modifiers,
    Par,
    Race,
    Seq,
    Sleep,
    Step,
    Try,
    Use,
    Value,
)

__all__ = ["AMBIGUOUS", "Err", "Ok", "Outcome", "job_outcome"]


@attrs.frozen
class Ok:
    value: Any
    t: Fraction


@attrs.frozen
class Err:
    type: str
    step: str
    name: str | None
    t: Fraction


class _Ambiguous:
    def __repr__(self) -> str:
        return "AMBIGUOUS"


AMBIGUOUS: Final = _Ambiguous()
Outcome = Ok | Err | _Ambiguous
_Attempt = Callable[[], Outcome]


def job_outcome(spec: JobSpec) -> Outcome:
    """A job run without interference: its body with the job's retry, then its deadline.

    A job that outlives its ``timeout`` is reported as ``Err("timed_out", ...)`` at the deadline.
    """
    outcome = _modified(lambda: _run(spec.body), Modifiers(retry=spec.retry), "")
    if spec.timeout is None or isinstance(outcome, _Ambiguous):
        return outcome
    deadline = Fraction(spec.timeout)
    if outcome.t < deadline:
        return outcome
    if outcome.t > deadline:
        return Err("timed_out", "", None, deadline)
    return AMBIGUOUS


def _run(step: Step) -> Outcome:
    kind = _KINDS[type(step)]
    return _modified(lambda: kind(step), step.mods, step.path)


def _modified(attempt: _Attempt, mods: Modifiers, path: str) -> Outcome:
    """``retry`` around ``timeout`` around ``attempt``."""
    if mods.retry is None:
        return _timed(attempt, mods, path)
    elapsed = Fraction(0)
    for number in range(1, mods.retry.attempts + 1):
        outcome = _timed(attempt, mods, path)
        if isinstance(outcome, _Ambiguous):
            return outcome
        if isinstance(outcome, Ok) or number == mods.retry.attempts:
            return _shift(outcome, elapsed)
        # Written out, not Retry.delay_before: the model must not share the code it checks.
        backoff, factor = Fraction(mods.retry.backoff), Fraction(mods.retry.factor)
        elapsed += outcome.t + backoff * factor ** (number - 1)
    raise AssertionError("unreachable: attempts >= 1")


def _timed(attempt: _Attempt, mods: Modifiers, path: str) -> Outcome:
    outcome = attempt()
    if mods.timeout is None or isinstance(outcome, _Ambiguous):
        return outcome
    limit = Fraction(mods.timeout)
    if outcome.t < limit:
        return outcome
    if outcome.t > limit:
        return Err("timeout", path, mods.name, limit)
    return AMBIGUOUS


def _shift(outcome: Ok | Err, by: Fraction) -> Ok | Err:
    return attrs.evolve(outcome, t=outcome.t + by)


# -- kinds -------------------------------------------------------------------------------------


def _sleep(step: Sleep) -> Outcome:
    return Ok(None, Fraction(step.seconds))


def _value(step: Value) -> Outcome:
    return Ok(step.value, Fraction(0))


def _log(step: Log) -> Outcome:
    return Ok(None, Fraction(0))


def _fail(step: Fail) -> Outcome:
    return Err("fail", step.path, step.mods.name, Fraction(0))


def _seq(step: Seq) -> Outcome:
    elapsed, output = Fraction(0), None
    for child in step.steps:
        outcome = _run(child)
        if isinstance(outcome, _Ambiguous):
            return outcome
        if isinstance(outcome, Err):
            return _shift(outcome, elapsed)
        elapsed, output = elapsed + outcome.t, outcome.value
    return Ok(output, elapsed)


def _branches(steps: tuple[Step, ...]) -> list[Ok | Err] | None:
    outcomes = [_run(child) for child in steps]
    if any(isinstance(o, _Ambiguous) for o in outcomes):
        return None
    return [o for o in outcomes if not isinstance(o, _Ambiguous)]


def _par(step: Par) -> Outcome:
    if step.limit is not None and step.limit < len(step.steps):
        return AMBIGUOUS  # which branches get the first slots is the scheduler's choice
    outcomes = _branches(step.steps)
    if outcomes is None:
        return AMBIGUOUS
    errors = [o for o in outcomes if isinstance(o, Err)]
    if errors:
        return _first(errors)  # the first failure cancels the rest
    values = [o.value for o in outcomes if isinstance(o, Ok)]
    return Ok(values, max(o.t for o in outcomes))


def _race(step: Race) -> Outcome:
    outcomes = _branches(step.steps)
    if outcomes is None:
        return AMBIGUOUS
    wins = [o for o in outcomes if isinstance(o, Ok)]
    if wins:
        first = min(o.t for o in wins)
        tied = [o for o in wins if o.t == first]
        same = all(repr(o.value) == repr(tied[0].value) for o in tied)
        return tied[0] if same else AMBIGUOUS  # simultaneous winners with different outputs
    errors = [o for o in outcomes if isinstance(o, Err)]
    first_error = _first(errors)
    if isinstance(first_error, _Ambiguous):
        return first_error
    return attrs.evolve(first_error, t=max(o.t for o in errors))  # every branch had to end


def _first(errors: list[Err]) -> Outcome:
    """The earliest failure; two at the same instant could be reported in either order."""
    first = min(e.t for e in errors)
    at_first = [e for e in errors if e.t == first]
    return at_first[0] if len(at_first) == 1 else AMBIGUOUS


def _try(step: Try) -> Outcome:
    body = _run(step.body)
    if not isinstance(body, Err):
        return body
    if step.catch is None:
        return Ok(None, body.t)
    caught = _run(step.catch)
    return caught if isinstance(caught, _Ambiguous) else _shift(caught, body.t)


def _use(step: Use) -> Outcome:
    job = step.job
    mods = Modifiers(name=job.name, timeout=job.timeout, retry=job.retry)
    return _modified(lambda: _run(job.body), mods, step.path)


_KINDS: dict[type, Callable[[Any], Outcome]] = {
    Sleep: _sleep,
    Value: _value,
    Log: _log,
    Fail: _fail,
    Seq: _seq,
    Par: _par,
    Race: _race,
    Try: _try,
    Use: _use,
}
