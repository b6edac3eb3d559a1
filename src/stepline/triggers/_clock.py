"""Two clocks: trio's for sleeping, a wall clock for calendar maths.

Schedules need both. ``cron`` is calendar time ("at 02:00 in Europe/Paris"), so its next firing is
computed from a Unix timestamp; but waiting must go through trio (``trio.sleep``) so that a test's
``MockClock`` can jump over hours of waiting in milliseconds, and so that cancellation works.

:class:`WallClock` is the one seam. Production uses :class:`SystemClock` (``time.time``). Tests
use :class:`TrioWallClock`, a wall clock that *is* trio's clock plus a fixed offset: under
``autojump_clock`` calendar time then advances exactly as fast as trio time does, from a start
date the test chooses, so "every day at 02:00" can be checked for a simulated week at once.

:func:`sleep_until` waits for a wall time in chunks of at most :data:`MAX_CHUNK` seconds and
re-reads the wall clock after each, so a system clock step (NTP, a suspended laptop) delays a cron
firing by at most one chunk instead of by however far the clock jumped.
"""

from __future__ import annotations

import time
from typing import Final, Protocol

import trio

__all__ = ["MAX_CHUNK", "SystemClock", "TrioWallClock", "WallClock", "sleep_until"]

MAX_CHUNK: Final = 60.0
"""Longest single sleep while waiting for a wall time: bounds the error after a clock step."""

_EPSILON: Final = 1e-6


class WallClock(Protocol):
    """Something that tells the current Unix time."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class TrioWallClock:
    """A wall clock driven by trio's clock: ``start`` at creation, then advancing with trio time.

    Create it inside ``trio.run``. With ``MockClock``/``autojump_clock`` this makes calendar
    time fully controlled by the test.
    """

    def __init__(self, start: float) -> None:
        self._offset = start - trio.current_time()

    def now(self) -> float:
        return trio.current_time() + self._offset


async def sleep_until(clock: WallClock, target: float) -> None:
    """Sleep until ``clock.now() >= target`` (returns at once when it already is)."""
    while True:
        remaining = target - clock.now()
        if remaining <= _EPSILON:  # float rounding: never spin on a sub-microsecond remainder
            return
        await trio.sleep(min(remaining, MAX_CHUNK))
