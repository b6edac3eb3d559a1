"""The front's share of the event loop: jobs first, HTTP callers second.

The front's HTTP work is split in two. Parsing, the event streams and every write to a client
run in the front's own process (:mod:`._child`); what needs the executor (a submit, a status,
a cancel) is forwarded to the executor's process and handled there, in the executor's own trio
loop, on the same core and the same GIL as the jobs. Left alone, that work competes with the
jobs on equal terms. So the front yields: while someone else uses the executor, the front's
tasks here may take at most :data:`SHARE` of the loop's CPU time; otherwise the front takes
what it wants (the share is a floor for the others, not a ceiling for the front).

Who the loop is busy for: the front watches the events (it sees every one). The jobs it
submitted itself (``POST /jobs``, webhooks) are its own; any other job's event, or a reply to a
stdin command, means someone else (a stdin driver, a schedule) is using the executor, and for
:data:`ACTIVE` seconds after such an event the front is held to its share. Its own jobs do not
hold it back: an HTTP-only load runs as fast as the front can take it.

How much it takes: a trio instrument times each step of the front's tasks (those that take
and answer the forwarded requests, :meth:`enlist`, and every task spawned below them, but not
the relay's feeder: it sends every job's events whether anyone calls or not) in CPU time of
the loop's thread, and the share refills in the same time.

Only while the front serves (:meth:`serving`, around each request and batch of submits) is
the instrument added and are the events watched (:attr:`armed`: the front's tap calls
:meth:`observe` only then): with nobody calling, a stdin job pays nothing for the share (an
instrument's hooks run at every task step of every task, and the events are most of what a
trivial job writes). So a request that comes after a quiet spell finds the others' last
event old and goes at once; the next event of someone else's, moments later under a stdin
driver, holds the front to its share again. The front's own code calls :meth:`LoopShare.turn` before
each piece of work it can hold back (a forwarded request before its handler); ``turn`` waits,
one caller at a time, while the front is over its share and someone else is using the
executor. A request waiting its turn holds its connection, so a caller that waits for answers
sends no more. (:meth:`stream_turn` does the same for an event stream served in this loop; the
front's process serves them, so only a test or an embedding that runs the events app here
uses it.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter, thread_time
from typing import Final

import trio

from ..wire._events import Event

__all__ = ["BATCH", "SHARE", "LoopShare"]

SHARE: Final = 0.20  # the loop time the front may take while others use the executor
BURST: Final = 0.02  # seconds of loop time the front may take at once, saved while it is idle
BATCH: Final = 16  # requests one ended wait lets go
MAX_OURS: Final = 10_000  # unfinished jobs of the front's remembered at most
ACTIVE: Final = 0.25  # seconds an event of someone else's keeps the front held to its share
_LONGEST_WAIT: Final = 0.01  # a wait is cut in pieces this long, to see the others go idle
_SHORTEST_WAIT: Final = 0.001  # and none is shorter: a tiny debt must not spin the loop


class LoopShare(trio.abc.Instrument):
    """Times the loop's task steps (the front's against the rest) and holds the front back."""

    def __init__(
        self,
        share: float = SHARE,
        burst: float = BURST,
        clock: Callable[[], float] = perf_counter,
        step_clock: Callable[[], float] = thread_time,
    ) -> None:
        self._share = share
        self._burst = burst
        self._clock = clock  # tests pass trio.current_time (the mock clock)
        # A step is charged the CPU time it took, not the wall time: on a machine whose cores
        # are all busy the process is often descheduled mid-step, and charging the front for
        # that held it back while the executor had time to spare (NOTES, "HTTP front").
        self._step_clock = step_clock
        self._front: set[trio.lowlevel.Task] = set()
        self._step_started = 0.0
        self.front_time = 0.0  # seconds of the front's task steps
        self._credit = burst
        self._refilled = step_clock()
        self._others_at = float("-inf")  # when someone else's event was last seen
        self._ours: set[str] = set()  # jobs the front submitted, until their finished
        self._submitting = 0  # submits under way in the front
        self._gate = trio.Lock()  # one caller at a time finds out whether it may go
        self._requests = trio.Lock()  # one request at a time queues for the gate,
        self._queued = 0  # requests waiting their turn
        self._passes = 0  # of them, how many may go without a wait of their own
        self._streams = trio.Lock()  # and one stream write
        self._serving = 0  # requests and batches being handled
        self.armed = False  # whether the tap should call observe (while serving)

    # -- the instrument (synchronous, called by trio around every task step) ------------------

    def enlist(self, task: trio.lowlevel.Task) -> None:
        """``task`` (one of the relay's long-lived tasks) is the front's, and so is every task
        spawned below it while the front serves."""
        self._front.add(task)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around a request's or a batch's handling: the instrument is added and the events are
        watched (:attr:`armed`) while any is under way, and only then."""
        if not self._serving:
            self._step_started = self._step_clock()  # the step under way is timed from here
            trio.lowlevel.add_instrument(self)
            self.armed = True
        self._serving += 1
        try:
            yield
        finally:
            self._serving -= 1
            if not self._serving:
                self.armed = False
                trio.lowlevel.remove_instrument(self)
                if len(self._ours) > MAX_OURS:  # their ends may come while nobody watches
                    self._ours.clear()

    def adopt(self, task: trio.lowlevel.Task) -> None:
        """``task`` and every task spawned below it from now on are the front's. Called by
        ``task`` itself just before the instrument is added, so the step under way when it is
        added is timed from here."""
        self._front.add(task)
        self._step_started = self._step_clock()

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        nursery = task.parent_nursery
        if nursery is not None and nursery.parent_task in self._front:
            self._front.add(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self._front.discard(task)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task in self._front:
            self._step_started = self._step_clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task in self._front:
            took = self._step_clock() - self._step_started
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
        nobody else uses the executor; otherwise once enough loop time has gone to the others.

        A wait that ends lets the requests queued behind it go too, up to :data:`BATCH` in all,
        without a wait each: one request per wait held the front to one request per turn of
        a sleep (1 ms asked, 5-20 ms given on a busy machine), far below its share. The debt a
        batch runs up is paid by the next wait, so over time the share holds."""
        if not self._held():
            return
        self._queued += 1
        try:
            async with self._requests, self._gate:
                if self._passes:
                    self._passes -= 1
                    return
                await self._wait()
                self._passes = min(BATCH, self._queued) - 1
        finally:
            self._queued -= 1

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
        now = self._step_clock()  # the share is of the loop's CPU time, as the steps are
        self._credit = min(self._burst, self._credit + (now - self._refilled) * self._share)
        self._refilled = now
