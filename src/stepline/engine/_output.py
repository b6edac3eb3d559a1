"""A ``run`` step's output as lines: into its job's log, and live as ``output`` events.

:class:`StepOutput` is the :class:`~stepline.runners._base.OutputSink` the ``run`` interpreter
gives each process. It splits what the runner reads into lines (:class:`LineSplitter`: no
newline, a final partial line completed at EOF, a line longer than :data:`MAX_LINE` bytes cut
into pieces) and numbers them in the job's :class:`~stepline.engine._logs.JobLog`.

*Streamed* (``"stream": true``): each line also becomes an ``output`` event as it is read. When
the outbox is congested the lines not yet emitted wait here (at most one chunk's worth) and the
sink reports itself congested, so the runner stops reading and the child blocks on its full
pipe: nothing is dropped, and memory stays bounded whatever the child writes.

*Not streamed*: the lines only go to the log, which keeps the last :data:`MAX_LINES
<stepline.engine._logs.MAX_LINES>`. A child that floods (a chunk holding more lines than the log
keeps: ``yes`` writes 32,768 lines per 64 KiB) would otherwise cost a Python object per line
for lines that are thrown away at once, several seconds of CPU for 300 MB; such a chunk is held
raw instead, only counted (in C) when the next flood chunk supersedes it, and split into lines
when the flood ends, at EOF, when the other stream writes, or when somebody reads the log.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Final

from ..runners._base import StreamName
from ..wire._events import Event, RequestId
from ..wire._outbox import Outbox
from ._logs import JobLog

__all__ = ["MAX_LINE", "LineSplitter", "StepOutput"]

MAX_LINE: Final = 1 << 16
"""Bytes of one line at most; a longer line is cut into pieces of this size."""


class LineSplitter:
    """Chunks of one stream into lines (bytes, without the newline)."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def lines(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes; a final piece without newline waits for the next."""
        if self._partial:
            data = self._partial + data
        parts = data.split(b"\n")
        partial = parts.pop()
        if len(data) > MAX_LINE and any(len(part) > MAX_LINE for part in parts):
            parts = [piece for part in parts for piece in _pieces(part)]
        while len(partial) > MAX_LINE:
            cut = _boundary(partial)
            parts.append(partial[:cut])
            partial = partial[cut:]
        self._partial = partial
        return parts

    def take_partial(self) -> bytes:
        """The incomplete line waiting for more, handed over (the splitter forgets it)."""
        partial, self._partial = self._partial, b""
        return partial

    def end(self) -> list[bytes]:
        """At EOF: the final line without a newline, if any."""
        partial = self.take_partial()
        return [partial] if partial else []


def _pieces(line: bytes) -> list[bytes]:
    pieces = []
    while len(line) > MAX_LINE:
        cut = _boundary(line)
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


def _boundary(data: bytes) -> int:
    """Where to cut ``data`` at most :data:`MAX_LINE` bytes in, not inside a UTF-8 character
    (a continuation byte is 0b10xxxxxx): back up at most three bytes."""
    cut = MAX_LINE
    while cut > MAX_LINE - 3 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


class StepOutput:
    """The output sink of one ``run`` step's process (see the module docstring)."""

    __slots__ = ("_backlog", "_held", "_job", "_log", "_outbox", "_request_id", "_split", "_step")

    def __init__(
        self,
        job: str,
        step: str,
        log: JobLog,
        outbox: Outbox | None,
        *,
        request_id: RequestId = None,
    ) -> None:
        """``outbox``: where to stream ``output`` events; None for a step that is not streamed.
        ``request_id``: the job's submit ``id``, echoed on each event."""
        self._job = job
        self._request_id = request_id
        self._step = step
        self._log = log
        self._outbox = outbox
        # Made at a stream's first chunk: most processes of a busy server write nothing at all.
        self._split: dict[StreamName, LineSplitter] = {}
        self._backlog: deque[Event] = deque()  # streamed lines the congested outbox refused
        self._held: dict[StreamName, bytes] = {}  # flood chunks not split yet (not streamed)

    # -- the OutputSink protocol ------------------------------------------------------------

    def write(self, stream: StreamName, data: bytes) -> None:
        if stream not in self._split:
            self._split[stream] = LineSplitter()
        if self._outbox is None:
            self._write_quietly(stream, data)
        else:
            self._add(stream, self._split[stream].lines(data))

    def eof(self, stream: StreamName) -> None:
        splitter = self._split.get(stream)
        if splitter is not None:  # else it wrote nothing
            self._settle(stream)
            self._add(stream, splitter.end())

    @property
    def congested(self) -> bool:
        return bool(self._backlog) or (self._outbox is not None and self._outbox.congested)

    async def wait_writable(self) -> None:
        """Until the outbox has room and every line waiting here went out. Each round emits at
        least one waiting line, so an outbox that stops counting (stdout gone) cannot stall it."""
        outbox = self._outbox
        if outbox is None:
            return
        await outbox.wait_writable()
        backlog = self._backlog
        while backlog:
            outbox.emit(backlog.popleft())
            if backlog and outbox.congested:
                await outbox.wait_writable()

    # -- lines ------------------------------------------------------------------------------

    def _add(self, stream: StreamName, lines: list[bytes]) -> None:
        if not lines:
            return
        ts = time.time()
        log, step, outbox = self._log, self._step, self._outbox
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            log.add(ts, step, stream, line)
            if outbox is None:
                continue
            ev = {"event": "output", "ts": ts, "job": self._job, "step": step, "stream": stream}
            ev["line"] = line
            if self._request_id is not None:
                ev["id"] = self._request_id
            if self._backlog or outbox.congested:
                self._backlog.append(ev)
            else:
                outbox.emit(ev)

    def _write_quietly(self, stream: StreamName, data: bytes) -> None:
        """Not streamed: lines go to the log, but a flood is held raw (module docstring).

        The other stream's held flood is split first: its lines were read before these, so they
        are numbered before them (the log's order is the order lines were read, across streams).
        Only a flood on both streams at once pays for it, one split per chunk.
        """
        if self._held:
            self._settle("stderr" if stream == "stdout" else "stdout")
        held = self._held.pop(stream, None)
        if data.count(b"\n") < self._log.max_lines:
            if held is not None:
                self._add(stream, self._tail(stream, held))
            self._add(stream, self._split[stream].lines(data))
            return
        if held is None:
            held = self._split[stream].take_partial()
            self._log.hold(self._settle_all)
        cut = held.rfind(b"\n") + 1  # what this chunk supersedes: the held complete lines
        if cut:
            self._log.skip(held.count(b"\n", 0, cut))
        self._held[stream] = held[cut:] + data

    def _tail(self, stream: StreamName, held: bytes) -> list[bytes]:
        """The held flood's last lines (as many as the log keeps); the others are counted."""
        keep = self._log.max_lines
        parts = held.rsplit(b"\n", keep + 1)  # [older lines, `keep` lines, the partial]
        if len(parts) > keep + 1:  # parts[0] holds every line before the kept ones
            self._log.skip(parts[0].count(b"\n") + 1)
            held = b"\n".join(parts[1:])
        return self._split[stream].lines(held)

    def _settle(self, stream: StreamName) -> None:
        held = self._held.pop(stream, None)
        if held is not None:
            self._add(stream, self._tail(stream, held))

    def _settle_all(self) -> None:
        self._settle("stdout")
        self._settle("stderr")
