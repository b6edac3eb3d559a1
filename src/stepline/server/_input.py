"""The command stream of a ``--state`` server: staged submits settled only before a read waits.

Durable submits are staged and settled together so that they share a commit
(:mod:`stepline.store._pipeline`), and they must never be held while the reader waits for input:
a driver that waits for ``accepted`` before it writes more would wait forever. Settling at the end
of every chunk read keeps that rule, but when the driver has written far ahead (a pipe full of
submits) it makes each 64 KiB chunk wait for its own commit before the next is read, and the
reader, not the disk, becomes the bottleneck (NOTES.md, Performance). So the rule is kept where
it matters: before a read, a zero-timeout ``poll`` asks whether input is there; only when it is not
(the read would wait) are the staged submits settled first. A partial line is no exception: the
read that waits for its rest settles first, like any other.
"""

from __future__ import annotations

import select
from collections.abc import Awaitable, Callable

import trio
from trio.lowlevel import FdStream

__all__ = ["SettleBeforeWaiting"]


class SettleBeforeWaiting(trio.abc.ReceiveStream):
    """``stream``, whose reads call ``settle`` first whenever no input is waiting."""

    def __init__(self, stream: FdStream, settle: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._settle = settle
        self._poll = select.poll()
        self._poll.register(stream.fileno(), select.POLLIN)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._input_waiting():
            await self._settle()
        return await self._stream.receive_some(max_bytes)

    def _input_waiting(self) -> bool:
        """Whether a read would return at once (data, EOF or an error: all end the wait)."""
        try:
            return bool(self._poll.poll(0))
        except OSError:  # let the read itself report what is wrong, after settling
            return False

    async def aclose(self) -> None:
        await self._stream.aclose()
