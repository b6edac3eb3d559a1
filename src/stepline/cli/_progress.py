"""How ``stepline run`` shows its jobs: a live view for a terminal, plain lines otherwise.

Both views get the same calls — :meth:`started` and :meth:`finished` as each job's events
arrive, :meth:`animate` running alongside, :meth:`close` at the end — and both print one
permanent result line per finished job, in the order they finish::

    succeeded build.json 1.20s {"exit":0,"stdout":"...","stderr":""}
    failed    deploy.jsonl:3 (push) 0.10s failure at steps[1]: exit status 1

:class:`PlainView` adds a ``started`` line per job and is what a pipe or a log file gets: every
line is final, greppable, and nothing is ever redrawn. :class:`LiveView` keeps, below the
results, a block it redraws ten times a second: one line per running job with its elapsed time,
and a count of jobs done, running and queued. The block is erased and redrawn in one write per
tick, and its lines are cut to the terminal's width so that the number of lines to erase is
always known.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

import trio

from ..client._api import JobHandle
from ..engine._jobs import JobState
from ..wire._events import Event
from ._term import paint

__all__ = ["LiveView", "PlainView", "View", "result_line", "summary"]

Tracked = tuple[str, JobHandle]  # (label, handle)

_STATE_STYLE = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow"}


def result_line(label: str, finished: Event, color: bool = False) -> str:
    """A finished job's permanent line: state, label, elapsed, output or error."""
    state = str(finished["state"])
    if state == "succeeded":
        detail = json.dumps(finished.get("output"), ensure_ascii=False, separators=(",", ":"))
    else:
        detail = _describe_error(finished.get("error") or {})
    mark = paint(f"{state:<10}", _STATE_STYLE.get(state, "bold"), color)
    return f"{mark}{label} {finished.get('elapsed', 0.0):.2f}s {detail}"


def _describe_error(error: dict[str, Any]) -> str:
    where = f" at {error['step']}" if error.get("step") else ""
    return f"{error.get('type', 'error')}{where}: {error.get('message', '')}"


def summary(jobs: Sequence[Tracked]) -> str:
    """``3 jobs: 2 succeeded, 1 failed``."""
    counts = Counter(handle.state.value for _, handle in jobs)
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    noun = "job" if len(jobs) == 1 else "jobs"
    return f"{len(jobs)} {noun}: {', '.join(parts)}"


class PlainView:
    """Plain lines, each final: for pipes and files."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def started(self, label: str) -> None:
        self._write(f"{'started':<10}{label}")

    def finished(self, label: str, finished: Event) -> None:
        self._write(result_line(label, finished))

    async def animate(self, jobs: Sequence[Tracked]) -> None:
        await trio.sleep_forever()  # nothing to redraw

    def close(self, jobs: Sequence[Tracked]) -> None:
        self._write(summary(jobs))

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()


class LiveView:
    """Results scrolling up, a redrawn block of running jobs below them: for a terminal."""

    def __init__(self, out: TextIO, *, color: bool, interval: float = 0.1) -> None:
        self._out = out
        self._color = color
        self._interval = interval
        self._results: list[str] = []  # finished since the last redraw
        self._height = 0  # lines of the block currently on screen

    def started(self, label: str) -> None:
        pass  # the next redraw shows it

    def finished(self, label: str, finished: Event) -> None:
        self._results.append(result_line(label, finished, self._color))

    async def animate(self, jobs: Sequence[Tracked]) -> None:
        while True:
            self._redraw(self._block(jobs))
            await trio.sleep(self._interval)

    def close(self, jobs: Sequence[Tracked]) -> None:
        self._redraw([summary(jobs)])
        self._height = 0  # the summary stays

    def _redraw(self, block: list[str]) -> None:
        erase = f"\r\x1b[{self._height}A\x1b[J" if self._height else ""
        lines = [*self._results, *block]
        self._out.write(erase + "".join(line + "\n" for line in lines))
        self._out.flush()
        self._results.clear()
        self._height = len(block)

    def _block(self, jobs: Sequence[Tracked]) -> list[str]:
        columns, rows = shutil.get_terminal_size()
        running = [(label, h) for label, h in jobs if h.state is JobState.RUNNING]
        room = max(rows - 3, 1)
        lines = [self._running_line(label, h) for label, h in running[:room]]
        if len(running) > room:
            lines.append(f"  … and {len(running) - room} more running")
        lines.append(paint(self._counts(jobs), "dim", self._color))
        return [_clip(line, columns - 1) for line in lines]

    def _running_line(self, label: str, handle: JobHandle) -> str:
        return f"  {paint('▸', 'cyan', self._color)} {label}  {handle.elapsed:.1f}s"

    @staticmethod
    def _counts(jobs: Sequence[Tracked]) -> str:
        states = Counter(h.state for _, h in jobs)
        done = len(jobs) - states[JobState.QUEUED] - states[JobState.RUNNING]
        failed = done - states[JobState.SUCCEEDED]
        return (
            f"{done}/{len(jobs)} done, {states[JobState.RUNNING]} running, "
            f"{states[JobState.QUEUED]} queued, {failed} not succeeded"
        )


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


View = PlainView | LiveView
