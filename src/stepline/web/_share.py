"""The front's share of the event loop: jobs first, watchers and HTTP callers second.

The front runs in the executor's own trio loop, on the same core and the same GIL. Left alone,
HTTP work competes with the jobs on equal terms, and it is not cheap: an answer costs about a
millisecond of Hypercorn's and Starlette's Python, and every event goes to every event stream.
Measured with 200 streams and 1,000 submits a second asked (NOTES, "HTTP front"), a stdin driver
lost most of its rate. So the front yields: while someone else uses the executor, the front's
tasks may take at most :data:`SHARE` of the loop's time; otherwise the front takes what it wants
(the share is a floor for the others, not a ceiling for the front).

Who the loop is busy for: the front watches the events (it sees every one). The jobs it
submitted itself (``POST /jobs``, webhooks) are its own; any other job's event, or a reply to a
stdin command, means someone else (a stdin driver, a schedule) is using the executor, and for
:data:`ACTIVE` seconds after such an event the front is held to its share. Its own jobs do not
hold it back: an HTTP-only load runs as fast as the front can take it.

How much it takes: a trio instrument times each step of the front's tasks (the task that runs
Hypercorn and every task spawned below it). The front's own code calls :meth:`LoopShare.turn`
before each piece of work it can hold back (a request before its handler, an event stream
before its next write); ``turn`` waits, one caller at a time, while the front is over its share
and someone else is using the executor. A request waiting its turn holds its connection, so a
caller that waits for answers sends no more; an event stream that waits falls behind, and once
it is behind what the event log keeps it is told which events it missed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Final

import trio

from ..wire._events import Event

__all__ = ["SHARE", "LoopShare"]

SHARE: Final = 0.10  # the loop time the front may take while others use the executor
BURST: Final = 0.02  # seconds of loop time the front may take at once, saved while it is idle
ACTIVE: Final = 0.25  # seconds an event of someone else's keeps the front held to its share
_LONGEST_WAIT: Final = 0.01  # a wait is cut in pieces this long, to see the others go idle
_SHORTEST_WAIT: Final = 0.001  # and none is shorter: a tiny debt must not spin the loop


class LoopShare(trio.abc.Instrument):
    """Times the loop's task steps (the front's against the rest) and holds the front back."""

    def __init__(
        self, share: float = SHARE, burst: float = BURST, clock: Callable[[], float] = perf_counter
    ) -> None:
        self._share = share
        self._burst = burst
        self._clock = clock  # tests pass trio.current_time (the mock clock)
        self._front: set[trio.lowlevel.Task] = set()
        self._step_started = 0.0
        self.front_time = 0.0  # seconds of the front's task steps
        self._credit = burst
        self._refilled = clock()
        self._others_at = float("-inf")  # when someone else's event was last seen
        self._ours: set[str] = set()  # jobs the front submitted, until their finished
        self._submitting = 0  # submits under way in the front
        self._gate = trio.Lock()  # one caller at a time finds out whether it may go
        self._requests = trio.Lock()  # one request at a time queues for the gate,
        self._streams = trio.Lock()  # and one stream write

    # -- the instrument (synchronous, called by trio around every task step) ------------------

    def adopt(self, task: trio.lowlevel.Task) -> None:
        """``task`` and every task spawned below it from now on are the front's. Called by
        ``task`` itself just before the instrument is added, so the step under way when it is
        added is timed from here."""
        self._front.add(task)
        self._step_started = self._clock()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        nursery = task.parent_nursery
        if nursery is not None and nursery.parent_task in self._front:
            self._front.add(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._front.discard(task)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task in self._front:
            self._step_started = self._clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task in self._front:
            took = self._clock() - self._step_started
            self.front_time += took
            self._credit -= took

    # -- who the executor is busy for (synchronous: from the outbox's tap and the handlers) ---

    @contextmanager
    def submitting(self) -> Iterator[None]:
        """Around the front's own submits: the ``accepted`` written meanwhile is the front's."""
        self._submitting += 1
        try:
            yield
        finally:
            self._submitting -= 1

    def observe(self, event: Event) -> None:
        job = event.get("job")
        if not isinstance(job, str):
            if "id" in event:  # a reply to a stdin command
                self._others_at = self._clock()
        elif job in self._ours:
            if event["event"] == "finished":
                self._ours.discard(job)
        elif event["event"] == "accepted" and self._submitting:
            self._ours.add(job)
        else:
            self._others_at = self._clock()

    # -- the front's side ---------------------------------------------------------------------

    async def turn(self) -> None:
        """Return when a request may be handled: at once while the front is within its share or
        nobody else uses the executor; otherwise once enough loop time has gone to the others."""
        if not self._held():
            return
        async with self._requests, self._gate:
            await self._wait()

    async def stream_turn(self) -> None:
        """:meth:`turn` for an event stream's next write. Requests queue one at a time for the
        gate, and so do streams, so while both wait they take turns: neither kind starves the
        other when the front is held to its share."""
        if not self._held():
            return
        async with self._streams, self._gate:
            await self._wait()

    def _held(self) -> bool:
        """Whether the front is over its share while someone else uses the executor (without
        it, nothing waits and nothing queues: the front pays no lock for a share it keeps)."""
        self._refill()
        if self._credit >= 0:
            return False
        if self._clock() - self._others_at > ACTIVE:
            self._credit = max(self._credit, 0.0)  # nobody else uses the executor: no debt
            return False
        return True

    async def _wait(self) -> None:
        # Polling, not an event: what ends the wait is time passing (the share refilling, or
        # the others going quiet), and each wait is short.
        while self._held():
            owed = -self._credit / self._share
            await trio.sleep(min(max(owed, _SHORTEST_WAIT), _LONGEST_WAIT))

    def _refill(self) -> None:
        now = self._clock()
        self._credit = min(self._burst, self._credit + (now - self._refilled) * self._share)
        self._refilled = now
