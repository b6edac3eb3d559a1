"""How ``stepline run`` shows its jobs: a live view for a terminal, plain lines otherwise, or
the events themselves as JSON Lines (``--json``).

Every view gets the same calls from the session — :meth:`started`, :meth:`event` and
:meth:`finished` as each job's events arrive, :meth:`note` for what the session itself has to
say ("cancelling 3 jobs…"), :meth:`animate` running alongside, :meth:`close` at the end. The
human views print one permanent result line per finished job, in the order they finish, and
below a failure the details from :mod:`stepline.cli._report`.

:class:`PlainView` adds a ``started`` line per job and a ``retry`` line per failed try, and is
what a pipe or a log file gets: every line is final, greppable, and nothing is ever redrawn;
the session's notes go to stderr. :class:`LiveView` keeps, below the results, a block it
redraws ten times a second: one line per running job with its elapsed time (and one per running
task of a graph job), and a count of jobs done, running and queued. The block is erased and
redrawn in one write per tick, and its lines are cut to the terminal's width so that the number
of lines to erase is always known.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, TextIO

import trio

from ..engine._jobs import JobState
from ..wire._events import Event
from ..wire._outbox import encode_events
from ._report import Track, counts_line, details, result_line
from ._term import Output, paint

__all__ = ["JsonView", "LiveView", "PlainView", "View"]


class _Human:
    """What the two views for people share: which lines a job's end is worth."""

    def __init__(self, out: Output, *, color: bool, verbose: bool, quiet: bool) -> None:
        self._out = out
        self._color = color
        self._verbose = verbose
        self._quiet = quiet

    def _result_lines(self, track: Track) -> list[str]:
        if self._quiet and track.handle.state is JobState.SUCCEEDED:
            return []
        line = result_line(track, color=self._color, verbose=self._verbose)
        return [line, *details(track, color=self._color, verbose=self._verbose)]

    def _event_lines(self, track: Track, ev: Event) -> list[str]:
        kind = ev.get("event")
        if kind == "retry" and not self._quiet:
            error = ev.get("error") or {}
            return [
                f"{paint(f'{kind:<10}', 'yellow', self._color)}{track.label} "
                f"try {ev.get('attempt')} of {ev.get('attempts')} failed at {ev.get('step')}: "
                f"{error.get('message', '')}; again in {ev.get('delay', 0):g}s"
            ]
        if kind == "log" and self._verbose:
            return [f"{'log':<10}{track.label} {ev.get('message', '')}"]
        return []

    def _summary(self, tracks: Sequence[Track]) -> list[str]:
        if self._quiet and all(t.handle.state is JobState.SUCCEEDED for t in tracks):
            return []
        return [counts_line(tracks)]


class PlainView(_Human):
    """Plain lines, each final: for pipes and files. Notes go to ``notes`` (stderr)."""

    def __init__(
        self,
        out: Output,
        *,
        verbose: bool = False,
        quiet: bool = False,
        notes: TextIO | None = None,
    ) -> None:
        super().__init__(out, color=False, verbose=verbose, quiet=quiet)
        self._notes = notes

    def started(self, track: Track) -> None:
        if not self._quiet:
            self._write([f"{'started':<10}{track.label}"])

    def event(self, track: Track, ev: Event) -> None:
        self._write(self._event_lines(track, ev))

    def finished(self, track: Track) -> None:
        self._write(self._result_lines(track))

    def note(self, text: str) -> None:
        notes = self._notes if self._notes is not None else sys.stderr
        notes.write(f"stepline run: {text}\n")
        notes.flush()

    async def animate(self, tracks: Sequence[Track]) -> None:
        await trio.sleep_forever()  # nothing to redraw

    def close(self, tracks: Sequence[Track]) -> None:
        self._write(self._summary(tracks))

    def _write(self, lines: list[str]) -> None:
        self._out.write("".join(line + "\n" for line in lines))


class LiveView(_Human):
    """Results scrolling up, a redrawn block of running jobs below them: for a terminal."""

    def __init__(
        self,
        out: Output,
        *,
        color: bool,
        verbose: bool = False,
        quiet: bool = False,
        interval: float = 0.1,
    ) -> None:
        super().__init__(out, color=color, verbose=verbose, quiet=quiet)
        self._interval = interval
        self._results: list[str] = []  # permanent lines since the last redraw
        self._height = 0  # lines of the block currently on screen
        self._stopping = False  # a note said jobs are being cancelled

    def started(self, track: Track) -> None:
        pass  # the next redraw shows it

    def event(self, track: Track, ev: Event) -> None:
        self._results += self._event_lines(track, ev)

    def finished(self, track: Track) -> None:
        self._results += self._result_lines(track)

    def note(self, text: str) -> None:
        self._results.append(paint(text, "yellow", self._color))
        self._stopping = True

    async def animate(self, tracks: Sequence[Track]) -> None:
        while True:
            self._redraw(self._block(tracks))
            await trio.sleep(self._interval)

    def close(self, tracks: Sequence[Track]) -> None:
        self._redraw(self._summary(tracks))
        self._height = 0  # the summary stays

    def _redraw(self, block: list[str]) -> None:
        if self._quiet:
            block = []
        erase = f"\r\x1b[{self._height}A\x1b[J" if self._height else ""
        lines = [*self._results, *block]
        self._out.write(erase + "".join(line + "\n" for line in lines))
        self._results.clear()
        self._height = len(block)

    def _block(self, tracks: Sequence[Track]) -> list[str]:
        columns, rows = shutil.get_terminal_size()
        now = trio.current_time()
        lines: list[str] = []
        for track in tracks:
            if track.handle.state is JobState.RUNNING:
                lines.append(self._running_line(track))
                lines += [
                    f"      {paint('·', 'cyan', self._color)} {task}  {now - since:.1f}s"
                    for task, since in track.tasks.items()
                ]
        room = max(rows - 3, 1)
        if len(lines) > room:
            lines[room:] = [f"  … and {len(lines) - room} more lines"]
        lines.append(paint(self._counts(tracks), "dim", self._color))
        return [_clip(line, columns - 1) for line in lines]

    def _running_line(self, track: Track) -> str:
        stopping = " (stopping)" if self._stopping else ""
        mark = paint("▸", "cyan", self._color)
        return f"  {mark} {track.label}  {track.handle.elapsed:.1f}s{stopping}"

    @staticmethod
    def _counts(tracks: Sequence[Track]) -> str:
        states = Counter(t.handle.state for t in tracks)
        done = len(tracks) - states[JobState.QUEUED] - states[JobState.RUNNING]
        failed = done - states[JobState.SUCCEEDED]
        return (
            f"{done}/{len(tracks)} done, {states[JobState.RUNNING]} running, "
            f"{states[JobState.QUEUED]} queued, {failed} not succeeded"
        )


class JsonView:
    """``--json``: every event of every job as one JSON line, with ``source``, the job's label
    (``file:line (name)``); nothing else on stdout. Notes go to stderr."""

    def __init__(self, out: Output, *, notes: TextIO | None = None) -> None:
        self._out = out
        self._notes = notes

    def started(self, track: Track) -> None:
        pass  # written by event()

    def event(self, track: Track, ev: Event) -> None:
        self._out.write(encode_events([{**ev, "source": track.label}]).decode())

    def finished(self, track: Track) -> None:
        pass  # written by event()

    def note(self, text: str) -> None:
        notes = self._notes if self._notes is not None else sys.stderr
        notes.write(f"stepline run: {text}\n")
        notes.flush()

    async def animate(self, tracks: Sequence[Track]) -> None:
        await trio.sleep_forever()

    def close(self, tracks: Sequence[Track]) -> None:
        pass


def _clip(line: str, width: int) -> str:
    """Cut a line to ``width`` visible characters (escape codes do not count)."""
    visible, out, i = 0, [], 0
    while i < len(line) and visible < width:
        if line[i] == "\x1b":
            end = line.index("m", i) + 1
            out.append(line[i:end])
            i = end
            continue
        out.append(line[i])
        visible += 1
        i += 1
    if i < len(line):
        out.append("\x1b[0m")  # never leave a style open
    return "".join(out)


class ViewLike(Protocol):
    """What the session calls on a view (the classes here, and quick mode's)."""

    def started(self, track: Track) -> None: ...

    def event(self, track: Track, ev: Event) -> None: ...

    def finished(self, track: Track) -> None: ...

    def note(self, text: str) -> None: ...

    async def animate(self, tracks: Sequence[Track]) -> None: ...

    def close(self, tracks: Sequence[Track]) -> None: ...


View = ViewLike
