"""Wake-ups: a flag a task waits on, set by a notification, by this node, or by the poll.

A NOTIFY only says "look now": what changed is always read from the tables, so a lost or
duplicated notification costs a poll interval at worst, never a job. Several notifications
before the waiter runs collapse into one wake-up.
"""

from __future__ import annotations

import math

import trio

__all__ = ["Wake"]


class Wake:
    """A level-triggered flag: :meth:`set` any number of times, :meth:`wait` clears it."""

    def __init__(self) -> None:
        self._set = False
        self._lot = trio.lowlevel.ParkingLot()

    def set(self) -> None:
        self._set = True
        self._lot.unpark_all()

    async def wait(self, timeout: float = math.inf) -> bool:
        """Return once set (True) or after ``timeout`` seconds (False); clears the flag."""
        with trio.move_on_after(timeout):
            while not self._set:
                await self._lot.park()
        was, self._set = self._set, False
        return was
