"""Containing a run: a ``run`` step's ``limits``, ``runner`` and ``network``, parsed from JSON.

``limits`` is ``{"memory", "cpu", "processes", "files", "output"}``: memory and output in bytes
(an integer, or a string such as ``"256M"`` with a ``K``/``M``/``G`` suffix), cpu in seconds of
CPU time, processes and files as counts. Every key is optional; a missing key is inherited, key by
key, from the job's ``limits``, then from ``serve --limits`` (:meth:`Limits.over`). The runners
enforce them (``stepline.runners``); this module only says what they are, so it imports no trio.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
from attrs import frozen

from .._errors import InvalidJob
from .._record import ValueRecord

__all__ = [
    "LIMIT_NAMES",
    "NO_LIMITS",
    "RUNNERS",
    "Limits",
    "parse_limits",
    "parse_runner",
    "parse_size",
]

RUNNERS: Final = ("local", "sandbox")
"""The runners a step, a job or ``serve --runner`` may name."""

LIMIT_NAMES: Final = ("memory", "cpu", "processes", "files", "output")

_SIZE: Final = re.compile(r"([0-9]+)([KMG]?)", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_MAX_BYTES: Final = 1 << 62  # beyond any machine; keeps the kernel's 64-bit fields happy


@frozen(repr=False, eq=False)
class Limits(ValueRecord):
    """Resource limits of one ``run`` step; None: not limited (or inherited, before merging).

    ``memory``: bytes for the step's whole process tree (a cgroup) or per process (rlimit).
    ``cpu``: seconds of CPU time per process. ``processes``: processes (and threads) at once.
    ``files``: open files per process. ``output``: bytes of stdout, and of stderr, a step may
    write; more fails the step (without it, more is cut at 1 MiB and the step goes on).
    """

    memory: int | None = None
    cpu: float | None = None
    processes: int | None = None
    files: int | None = None
    output: int | None = None

    def over(self, defaults: Limits) -> Limits:
        """These limits with each missing one taken from ``defaults``."""
        if defaults is NO_LIMITS or self == defaults:
            return self
        if self is NO_LIMITS:
            return defaults
        mine, theirs = attrs.asdict(self), attrs.asdict(defaults)
        return Limits(**{k: theirs[k] if v is None else v for k, v in mine.items()})

    def __str__(self) -> str:
        """``none``, or the limits that are set as ``{"memory": 268435456, ...}`` (help texts)."""
        shown = ", ".join(f'"{k}": {v:g}' for k, v in self.set().items())
        return "{" + shown + "}" if shown else "none"

    def set(self) -> dict[str, Any]:
        """The limits that are set, by name (for messages and docs)."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


NO_LIMITS: Final = Limits()


def parse_size(raw: object) -> int:
    """Bytes: a whole number >= 0, or a string ``"512"``, ``"64K"``, ``"256M"``, ``"1G"``.

    Raises ``ValueError`` with a message fit to follow a path or a flag name.
    """
    if type(raw) is int and 0 <= raw <= _MAX_BYTES:
        return raw
    if type(raw) is str:
        match = _SIZE.fullmatch(raw.strip())
        if match is not None:
            value = int(match.group(1)) * _UNITS[match.group(2).upper()]
            if value <= _MAX_BYTES:
                return value
    raise ValueError(f'expected bytes such as 1048576 or "256M", got {_show(raw)}')


def _count(raw: object) -> int:
    if type(raw) is int and 1 <= raw <= _MAX_BYTES:
        return raw
    raise ValueError(f"expected a whole number of at least 1, got {_show(raw)}")


def _seconds(raw: object) -> float:
    if (type(raw) is int or type(raw) is float) and 0 < raw < math.inf and raw <= _MAX_BYTES:
        return float(raw)
    raise ValueError(f"expected a number of seconds above 0, got {_show(raw)}")


def _positive_size(raw: object) -> int:
    value = parse_size(raw)
    if value == 0:
        raise ValueError("must be at least 1 byte")
    return value


_PARSERS: Final[Mapping[str, Callable[[object], Any]]] = {
    "memory": _positive_size,
    "cpu": _seconds,
    "processes": _count,
    "files": _count,
    "output": parse_size,
}


def parse_limits(
    raw: object, path: str, placeholder: Callable[[object], bool] = lambda _: False
) -> Limits:
    """A ``limits`` object at ``path``; raises :class:`InvalidJob` naming the key at fault.

    ``placeholder`` tells a value left for later (an unresolved ``${params.X}`` at define time);
    such a value is accepted unchecked and not applied.
    """
    if type(raw) is not dict:
        if placeholder(raw):
            return NO_LIMITS
        raise InvalidJob(path, f"expected an object of limits, got {_show(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        parse = _PARSERS.get(key) if type(key) is str else None
        if parse is None:
            names = ", ".join(LIMIT_NAMES)
            raise InvalidJob(path, f"unknown limit {_show(key)} (limits are {names})")
        if placeholder(value):
            continue
        try:
            values[key] = parse(value)
        except ValueError as exc:
            raise InvalidJob(f"{path}.{key}", str(exc)) from None
    return Limits(**values) if values else NO_LIMITS


def parse_runner(
    raw: object, path: str, placeholder: Callable[[object], bool] = lambda _: False
) -> str | None:
    """A ``runner`` name at ``path`` (None: a placeholder, decided later)."""
    if raw in RUNNERS:
        return str(raw)
    if placeholder(raw):
        return None
    raise InvalidJob(path, f"expected one of {', '.join(map(repr, RUNNERS))}, got {_show(raw)}")


def _show(raw: object) -> str:
    if type(raw) is str:
        return repr(raw[:40])
    if raw is None:
        return "null"
    if type(raw) in (bool, int, float):
        return str(raw).lower() if type(raw) is bool else str(raw)
    return "a list" if type(raw) is list else "an object"
