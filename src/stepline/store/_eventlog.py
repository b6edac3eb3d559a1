"""The event log: what the driver is told, committed with the change it reports, then written.

With ``--state`` every event the driver must get (``accepted``, ``started``, ``cancelling``,
``recovered``, ``finished``) is *logged*: it joins the store's open batch beside the state change
it reports, is committed in the same transaction, and only then handed to stdout (a
transactional outbox). So nothing is ever written that a crash could take back, and what was
committed but not yet written when the process died is written after the restart
(:meth:`EventLog.redeliver`). Each logged event carries ``seq``, its place in the log: 1, 2, ...
across restarts, so a driver that saw an event before a crash recognises its copy.

A *delivery cursor* records how far stdout got: the sink counts the events it wrote
(``written``), the log remembers the sink's count after each commit's lines were handed over and
the ``seq`` of the last of them, and the cursor committed with a later batch says "every event up
to here was written"; the backend may then forget them. Only an event written in the short window
between its write and the next commit of the cursor can be written twice (the same line, the
same ``seq``): a commit's lines count as written once the last of them is.

Every other event (``status`` and other replies, ``progress``, step output) is *sequenced*:
while logged events wait for their commit, a plain event waits behind them
(:meth:`EventLog.emit`), so stdout keeps the order in which things happened. That is why a
``status`` reply never shows a job final before that job's ``finished`` was written.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from ..wire._events import Event
from ..wire._outbox import encode_event
from ._model import LoggedEvent

__all__ = ["EventLog", "Handover", "NumberedRun", "Plain", "SequencedOutbox", "Sink"]


class Sink(Protocol):
    """Where events end up (stdout's outbox), counting what it handed out and wrote."""

    def emit(self, event: Event) -> None: ...

    async def wait_writable(self) -> None: ...

    @property
    def congested(self) -> bool: ...

    def emit_line(self, line: bytes) -> None:
        """Write an event already encoded as one JSON line."""
        ...

    def emit_lines(self, data: bytes, count: int) -> None:
        """Write ``count`` events already encoded as consecutive JSON lines."""
        ...

    @property
    def emitted(self) -> int:
        """Events handed to this sink so far."""
        ...

    @property
    def written(self) -> int:
        """Events actually written so far (a prefix of those emitted)."""
        ...

    async def wait_written(self, count: int) -> None:
        """Return once ``count`` events were written, or the sink can write no more."""
        ...


class Plain:
    """A plain event waiting behind logged ones (logged events wait as the bare event dict)."""

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event


class NumberedRun:
    """Logged events encoded together as one ``%`` format that takes their ``count`` ``seq``
    numbers in order: a run of value jobs completed at once, three events each
    (:func:`~stepline.wire._events.numbered_completed_run_lines`). One object per run."""

    __slots__ = ("count", "lines")

    def __init__(self, lines: bytes, count: int) -> None:
        self.lines = lines
        self.count = count


Handover = list["Event | bytes | NumberedRun | Plain"]
"""A batch's events in order: logged ones as the event itself, a job completed at once as its
three lines still to be numbered (``bytes``: a ``%`` format taking three ``seq``,
:func:`~stepline.wire._events.numbered_completed_lines`), a run of them as a
:class:`NumberedRun`, plain ones wrapped in :class:`Plain`.
No tuple per event: a trivial job logs three events, and every tuple made counts towards the
next cycle collection, which walks the young objects each time (NOTES.md, "--state
throughput")."""


class EventLog:
    """The logged and sequenced events of a store: the open batch's, and the cursor's progress."""

    def __init__(self, last_seq: int) -> None:
        self.sink: Sink | None = None
        self._pending: Handover = []  # the open batch's events
        self._handing = False  # a taken batch's events wait for its commit
        self._seq = last_seq  # the last sequence number given
        self._stamped: list[bytes] = []  # the lines of the batch being committed, per entry
        # (sink's emitted count, seq) after each handover that wrote logged lines: when the
        # sink has written that many events, every logged event up to seq was written.
        self._handed: deque[tuple[int, int]] = deque()
        self._written_seq = 0  # every logged event up to this one was written
        self.cursor = 0  # the delivery cursor as last committed

    # -- filling the open batch (synchronous, on the trio thread) -------------------------------

    def log(self, event: Event) -> None:
        """A logged event: written once the open batch is committed."""
        self._pending.append(event)

    def log_completed(self, lines: bytes) -> None:
        """A job's three logged events at once, as a ``%`` format taking their ``seq``
        (:func:`~stepline.wire._events.numbered_completed_lines`)."""
        self._pending.append(lines)

    def log_completed_run(self, lines: bytes, count: int) -> None:
        """``count`` logged events at once, as a ``%`` format taking their ``seq`` in order
        (:func:`~stepline.wire._events.numbered_completed_run_lines`)."""
        self._pending.append(NumberedRun(lines, count))

    def emit(self, event: Event) -> None:
        """A plain event: written now, or after the logged events that wait before it."""
        if self._pending or self._handing:
            self._pending.append(Plain(event))
        else:
            self._sink().emit(event)

    @property
    def waiting(self) -> bool:
        """Whether events wait for a commit (then plain events queue behind them)."""
        return bool(self._pending) or self._handing

    def withdraw(self, handover: Handover, job_ids: set[str]) -> Handover:
        """The handover without the ``accepted`` of submits that were refused, nor the events
        of jobs completed at once (every one of them in a failed batch is refused)."""
        return [
            ev
            for ev in handover
            if isinstance(ev, Plain)
            or (isinstance(ev, dict) and not (ev["event"] == "accepted" and ev["job"] in job_ids))
        ]

    # -- a commit ---------------------------------------------------------------------------

    def take(self) -> Handover:
        """The open batch's events, to be stamped and committed; a new batch starts empty."""
        pending, self._pending = self._pending, []
        self._handing = True
        return pending

    def stamp(self, handover: Handover) -> list[LoggedEvent]:
        """Give each logged event its ``seq``; returns the batch's lines as one run, as the
        batch stores them (none: no logged event).

        Stamped again from the same number if the commit fails (nothing of it was kept).
        """
        seq = self._seq
        lines: list[bytes] = []
        for ev in handover:
            if isinstance(ev, bytes):  # a job completed at once: its three events
                lines.append(ev % (seq + 1, seq + 2, seq + 3))
                seq += 3
            elif isinstance(ev, NumberedRun):  # a run of them
                lines.append(ev.lines % tuple(range(seq + 1, seq + 1 + ev.count)))
                seq += ev.count
            elif isinstance(ev, dict):
                seq += 1
                ev["seq"] = seq
                lines.append(encode_event(ev))
        self._stamped = lines
        return [(seq, b"".join(lines))] if lines else []

    def committed(self, handover: Handover, run: list[LoggedEvent]) -> None:
        """The batch is durable: its sequence numbers are used, and its events go out."""
        first = self._seq + 1
        if run:
            self._seq = run[-1][0]
        self._handing = False
        lines, self._stamped = self._stamped, []
        if len(lines) == len(handover):  # no plain event among them: the common case
            if run:
                self._write_lines(run[-1][1], self._seq - first + 1, self._seq)
        else:
            self._hand_over(handover, lines)
        # Plain events that came after the batch was taken, before any logged one, go too.
        pending = self._pending
        ready = 0
        while ready < len(pending) and isinstance(pending[ready], Plain):
            ready += 1
        if ready:
            plain, self._pending = pending[:ready], pending[ready:]
            self._hand_over(plain, [])

    def abandoned(self, handover: Handover) -> None:
        """The batch will never be committed, nor any after it: its logged events and those
        waiting are not written (and not logged), but the plain ones among them are, in order
        (the refusals of its submits among them)."""
        self._handing = False
        waiting, self._pending = handover + self._pending, []
        for ev in waiting:
            if isinstance(ev, Plain):
                self._sink().emit(ev.event)

    def redeliver(self, lines: list[LoggedEvent]) -> None:
        """Write what a previous run committed but had not written (before anything else);
        ``lines``: one line each, as a snapshot holds them."""
        if lines:
            self._write_lines(b"".join([line for _, line in lines]), len(lines), lines[-1][0])

    def _hand_over(self, handover: Handover, lines: list[bytes]) -> None:
        """Write the handover's events, plain ones among them: each logged entry as its lines
        in ``lines`` (in order)."""
        sink = self._sink()
        logged = iter(lines)
        for ev in handover:
            if isinstance(ev, Plain):
                sink.emit(ev.event)
            elif isinstance(ev, bytes):
                sink.emit_lines(next(logged), 3)
            elif isinstance(ev, NumberedRun):
                sink.emit_lines(next(logged), ev.count)
            else:
                sink.emit_line(next(logged))
        if lines:
            self._handed.append((sink.emitted, self._seq))

    def _write_lines(self, data: bytes, count: int, last: int) -> None:
        """``count`` logged events up to ``last``, handed to the sink together (one call)."""
        sink = self._sink()
        sink.emit_lines(data, count)
        self._handed.append((sink.emitted, last))

    # -- the delivery cursor ------------------------------------------------------------------

    def delivered(self) -> int:
        """The highest ``seq`` written so far, by the sink's count."""
        handed, written = self._handed, self._sink().written
        while handed and handed[0][0] <= written:
            self._written_seq = handed.popleft()[1]
        return self._written_seq

    @property
    def lagging(self) -> bool:
        """Whether events were handed over whose delivery is not yet committed."""
        return bool(self._handed) or self._written_seq > self.cursor

    async def wait_all_written(self) -> None:
        """Wait until every line handed over was written (or the sink gave up)."""
        if self._handed:
            await self._sink().wait_written(self._handed[-1][0])

    def _sink(self) -> Sink:
        assert self.sink is not None, "Store.attach or Store.sequence first"
        return self.sink


class SequencedOutbox:
    """The executor's outbox with ``--state``: plain events wait behind logged ones."""

    def __init__(self, log: EventLog, sink: Sink) -> None:
        self._log = log
        self._sink = sink

    def emit(self, event: Event) -> None:
        self._log.emit(event)

    async def wait_writable(self) -> None:
        await self._sink.wait_writable()

    @property
    def congested(self) -> bool:
        return self._sink.congested
