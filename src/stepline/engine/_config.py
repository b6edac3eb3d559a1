"""The executor's settings, written once: :class:`Config`'s fields are the single source.

Each field carries, in its metadata, how it appears on the command line (:class:`Flag`: help text,
flag name, metavar, how text becomes a value). ``stepline serve`` generates its executor flags from
these fields, and :func:`stepline.open_executor` takes exactly these fields as keywords, so a new
setting is one field here and nothing else: its flag, its help, its default and its keyword follow.

The validators here raise ``ValueError`` with a message that reads well both after a flag
(``argument --workers: workers must be at least 1, got 0``) and from Python (``Config(workers=0)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs
from attrs import field, frozen

from .._errors import InvalidJob
from .._record import ValueRecord
from ..spec._limits import NO_LIMITS, RUNNERS, Limits, parse_limits
from ..spec._policy import AllowRun, parse_allow_run
from ._jobs import KEEP_BYTES

__all__ = ["FLAG", "Config", "Flag", "flag_of"]

FLAG: Final = "stepline.flag"
"""The metadata key of a :class:`Config` field's :class:`Flag`."""


@frozen(repr=False, eq=False)
class Flag(ValueRecord):
    """How a :class:`Config` field appears as a ``stepline serve`` flag.

    ``parse`` turns the flag's text into a value (the field's converter and validator then run,
    as they do for a keyword); None makes the flag a switch that sets True. ``name`` is the flag
    when it is not ``--`` plus the field's name with dashes. ``default`` is how the help shows the
    default when the value itself would not read well (None for ``--allow-run``'s "all").
    """

    help: str
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    name: str | None = None
    choices: tuple[str, ...] | None = None
    default: str | None = None


def flag_of(attribute: attrs.Attribute[Any]) -> Flag:
    """The :class:`Flag` of a :class:`Config` field."""
    flag: Flag = attribute.metadata[FLAG]
    return flag


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


_UNITS: Final = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _byte_count(text: str) -> int:
    """``65536``, ``64K``, ``16M``, ``1G``: a number of bytes."""
    unit = _UNITS.get(text[-1:].upper(), 1)
    try:
        return int(text[:-1] if unit > 1 else text) * unit
    except ValueError:
        raise ValueError(f"expected a number of bytes such as 65536 or 16M, got {text!r}") from None


def _limits_json(text: str) -> Any:
    """``--limits '{"memory": "1G"}'``: a JSON object, checked by :func:`_to_limits`."""
    import orjson  # start-up time: only when the flag is given

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError(f"expected a JSON object of limits, got {text!r}") from None


def _to_limits(value: Limits | Any) -> Limits:
    """A :class:`Limits`, or the JSON object of one (``{"memory": "1G", "cpu": 60}``)."""
    if isinstance(value, Limits):
        return value
    try:
        return parse_limits(value, "limits")
    except InvalidJob as exc:
        raise ValueError(str(exc)) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text!r}") from None


def _at_least(minimum: int) -> Callable[[Any, attrs.Attribute[Any], int], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if not value >= minimum:
            raise ValueError(f"{attribute.name} must be at least {minimum}, got {value}")

    return check


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, attrs.Attribute[Any], str], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")

    return check


def _count(default: int, help: str, *, minimum: int = 1, name: str | None = None) -> Any:
    flag = Flag(help, _whole_number, metavar="N", name=name)
    return field(default=default, validator=_at_least(minimum), metadata={FLAG: flag})


def _duration(default: float, help: str) -> Any:
    flag = Flag(help, _number, metavar="S")
    return field(default=default, validator=_seconds, metadata={FLAG: flag})


def _choice(default: str, help: str, choices: tuple[str, ...]) -> Any:
    flag = Flag(help, str, choices=choices)
    return field(default=default, validator=_one_of(choices), metadata={FLAG: flag})


def _switch(help: str) -> Any:
    return field(default=False, metadata={FLAG: Flag(help)})


@frozen(kw_only=True, repr=False, eq=False)
class Config(ValueRecord):
    """Executor settings: the executor flags of ``stepline serve`` and the keywords of
    :func:`stepline.open_executor` are these fields, one to one."""

    workers: int = _count(4, "jobs running at once")
    queue_size: int = _count(
        64, "accepted jobs waiting for a worker (the bounded queue)", name="--queue"
    )
    on_full: Literal["block", "reject"] = _choice(
        "block",
        "what a submit does when the queue is full: block stops reading commands until a worker "
        "frees a slot; reject answers it with a queue_full error",
        ("block", "reject"),
    )
    heartbeat: float = _duration(
        1.0, "seconds between the progress events of each running job; 0: none"
    )
    keep: int = _count(1000, "finished jobs whose records status can still report", minimum=0)
    keep_bytes: int = field(
        default=KEEP_BYTES,
        validator=_at_least(0),
        metadata={
            FLAG: Flag(
                "bytes of output and log lines the kept records may hold in all (K, M, G "
                "suffixes allowed); the oldest are dropped first (status says output_dropped, "
                "logs counts the lines as trimmed)",
                _byte_count,
                metavar="BYTES",
            )
        },
    )
    trace: bool = _switch("emit a step event as each step starts and ends")
    stream: bool = _switch(
        'emit each line run steps write as an output event (a step or job can say "stream": false)'
    )
    alert_repeat: float = _duration(
        60.0, "announce an open alert again every S seconds; 0: once, never repeated"
    )
    callback_limit: int = _count(8, "webhook and run callbacks running at once")
    callback_drain: float = _duration(
        30.0, "seconds a draining shutdown waits for pending callbacks before cancelling them"
    )
    artifacts: str = field(
        default="stepline-artifacts",
        metadata={
            FLAG: Flag(
                "directory a job's artifacts are copied to, in a subdirectory named after the job "
                "(DIR/JOBID/); made when first needed",
                str,
                metavar="DIR",
            )
        },
    )
    allow_run: AllowRun = field(
        default=None,
        converter=parse_allow_run,
        metadata={
            FLAG: Flag(
                "programs run steps and callbacks may start, matched exactly against argv[0] "
                "(/bin/sh for a shell line); others are refused at submit with invalid_job",
                str,
                metavar="all|none|PROG,...",
                default="all",
            )
        },
    )
    limits: Limits = field(
        default=NO_LIMITS,
        converter=_to_limits,
        metadata={
            FLAG: Flag(
                "default limits of every run step, under the job's and the step's own, as JSON: "
                '{"memory": "1G", "cpu": 60, "processes": 64, "files": 256, "output": "4M"}',
                _limits_json,
                metavar="JSON",
                default="none",
            )
        },
    )
    runner: Literal["local", "sandbox"] = _choice(
        "local",
        "the runner of run steps and jobs that name none: local process trees, or sandbox "
        "(bubblewrap: read-only host, private /tmp, own PID namespace, no network)",
        RUNNERS,
    )
