"""One job's events, kept for the Python APIs that hand them out: bounded, gaps made visible.

Both the in-process API (:mod:`stepline.client._api`) and the subprocess clients
(:mod:`stepline.client._sync`) give every job handle an ``events()`` iterator that starts at
``accepted`` and ends after ``finished``, however late it is called. So a handle keeps its job's
events rather than streaming them to one consumer, and any number of iterators read the same
history, each with its own cursor (a sequence number).

Why bounded, and how: a job has at most three lifecycle events (``accepted``, ``started``,
``finished``), but ``log``, ``progress`` (one per heartbeat) and ``step`` events are unbounded —
a chatty or long job would grow the history without limit, and a handle whose events nobody
reads must not stall its job. So when the history is full, the *oldest* non-lifecycle event is
evicted. Lifecycle events are never evicted, so :meth:`EventHistory.finished` and ``wait()``
always work. An iterator that finds evicted events between its cursor and the next event it
reads gets a synthetic ``{"event": "dropped", "job": ..., "count": n}`` in their place: a gap
is never silent.

This module is pure data, no I/O and no waiting: each API wraps it with its own way to wait
(a trio parking lot, a thread condition).
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from ..engine._jobs import JobState
from ..wire._events import Event

__all__ = [
    "DEFAULT_HISTORY",
    "LIFECYCLE",
    "MIN_HISTORY",
    "EventHistory",
    "HistoryReader",
    "HistoryRouter",
    "HistoryView",
]

DEFAULT_HISTORY: Final = 1000
"""Events kept per job by default: every lifecycle event plus the most recent others."""

MIN_HISTORY: Final = 4
"""The three lifecycle events plus room for one other event."""

LIFECYCLE: Final = frozenset({"accepted", "started", "finished"})


class EventHistory:
    """The events of one job, in order, each numbered; bounded as the module doc explains."""

    def __init__(self, job: str, capacity: int = DEFAULT_HISTORY) -> None:
        if capacity < MIN_HISTORY:
            raise ValueError(f"an event history holds at least {MIN_HISTORY} events")
        self.job = job
        self.capacity = capacity
        self.finished: Event | None = None  # the job's `finished` event, once it arrived
        self.evicted = 0  # events evicted so far
        self._seqs: list[int] = []  # sequence numbers, parallel to _events, ascending
        self._events: list[Event] = []
        self._next = 0
        self._started_ts: float | None = None  # the `started` event's wall-clock time

    @property
    def end(self) -> int:
        """The cursor just past the newest event."""
        return self._next

    @property
    def done(self) -> bool:
        return self.finished is not None

    @property
    def state(self) -> str:
        """The job's state as its events tell it: ``queued``, ``running``, or the final state."""
        if self.finished is not None:
            return str(self.finished["state"])
        return "running" if self._started_ts is not None else "queued"

    @property
    def elapsed(self) -> float:
        """Seconds the job has run: 0 while queued, the executor's figure once finished, and
        meanwhile an estimate from the ``started`` event's timestamp."""
        if self.finished is not None:
            return float(self.finished.get("elapsed", 0.0))
        if self._started_ts is None:
            return 0.0
        return max(time.time() - self._started_ts, 0.0)

    def append(self, ev: Event) -> None:
        if len(self._events) >= self.capacity:
            self._evict_oldest_other()
        self._seqs.append(self._next)
        self._events.append(ev)
        self._next += 1
        kind = ev.get("event")
        if kind == "finished":
            self.finished = ev
        elif kind == "started":
            self._started_ts = float(ev.get("ts", time.time()))

    def read(self, cursor: int) -> tuple[list[Event], int]:
        """Events from sequence number ``cursor`` on, with ``dropped`` markers; and the next
        cursor."""
        start = bisect.bisect_left(self._seqs, cursor)
        out: list[Event] = []
        expected = cursor
        for seq, ev in zip(self._seqs[start:], self._events[start:], strict=True):
            if seq > expected:
                out.append(self._gap(seq - expected))
            out.append(ev)
            expected = seq + 1
        return out, max(expected, cursor)

    def _evict_oldest_other(self) -> None:
        # Lifecycle events sit at the front (accepted, started) or arrive last (finished), so
        # the scan stops within the first few entries.
        for i, ev in enumerate(self._events):
            if ev.get("event") not in LIFECYCLE:
                del self._seqs[i], self._events[i]
                self.evicted += 1
                return

    def _gap(self, count: int) -> Event:
        return {"event": "dropped", "ts": time.time(), "job": self.job, "count": count}


class HistoryReader:
    """One iterator's cursor over a history: hands out events one by one, ends after
    ``finished``. Waiting for more is the caller's business (see the module doc)."""

    def __init__(self, history: EventHistory) -> None:
        self._history = history
        self._cursor = 0
        self._batch: deque[Event] = deque()
        self.ended = False  # `finished` was handed out: the iteration is over

    def pop(self) -> Event | None:
        """The next event, or None when there is none yet (or the iteration ended)."""
        if not self._batch and not self.ended:
            events, self._cursor = self._history.read(self._cursor)
            self._batch.extend(events)
        if not self._batch:
            return None
        ev = self._batch.popleft()
        if ev.get("event") == "finished":
            self.ended = True
        return ev


H = TypeVar("H", bound=EventHistory)


class HistoryRouter(Generic[H]):
    """Routes events by their ``job`` field into per-job histories made by ``factory``.

    A job's history is created by its ``accepted`` event and leaves the routing table with its
    ``finished``: from then on only the job's handle holds it, so a long-lived executor or client
    keeps no memory for jobs whose handles are gone.
    """

    def __init__(self, factory: Callable[[str], H]) -> None:
        self._factory = factory
        self._live: dict[str, H] = {}

    def route(self, ev: Event) -> H | None:
        """Append ``ev`` to its job's history; returns that history (None: not a job event)."""
        job = ev.get("job")
        if not isinstance(job, str):
            return None
        history = self._live.get(job)
        if history is None:
            if ev.get("event") != "accepted":
                return None  # every event of a job follows its `accepted`: a stray, ignore it
            history = self._live[job] = self._factory(job)
        history.append(ev)
        if history.done:
            del self._live[job]
        return history

    def open(self, job: str) -> H:
        """The history of a job whose events begin without ``accepted`` (a job recovered from
        ``--state`` begins with ``recovered``): routed from now on, as if accepted."""
        history = self._live.get(job)
        if history is None:
            history = self._live[job] = self._factory(job)
        return history

    def get(self, job: str) -> H | None:
        """The history of a job not yet finished."""
        return self._live.get(job)

    def live(self) -> list[H]:
        """Histories of jobs not yet finished."""
        return list(self._live.values())


class HistoryView:
    """What a client's job handle shows, read from the job's event history.

    Shared by the threaded and the trio client's handles, which differ only in how they wait.
    """

    def __init__(self, history: EventHistory) -> None:
        self._history = history

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self._history.state}>"

    @property
    def id(self) -> str:
        return self._history.job

    @property
    def state(self) -> JobState:
        return JobState(self._history.state)

    @property
    def done(self) -> bool:
        return self._history.done

    @property
    def elapsed(self) -> float:
        """Seconds the job has run: 0 while queued, frozen once finished."""
        return self._history.elapsed
