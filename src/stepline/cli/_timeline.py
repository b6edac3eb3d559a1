"""A job timeline drawn in the terminal: a row per worker, a bar per job, from wire events.

``stepline demo`` draws one after each scene, so bounded concurrency (never more rows than
workers), a cancel (a bar cut short) and a race (one bar where the loser never shows) are seen
rather than read. The protocol does not say which worker ran a job, and need not: a job is put on
the lowest row free when its ``started`` arrives, which is how many workers were busy at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attrs import define, field

__all__ = ["Bar", "Timeline"]

_ENDS: dict[str, str] = {"succeeded": "✓", "failed": "✗", "timed_out": "⏱", "cancelled": "⊘"}


@define
class Bar:
    """One job on one row: from its ``started`` to its ``finished`` (seconds from the start)."""

    job: str
    label: str
    row: int
    start: float
    end: float | None = None
    state: str | None = None


@define
class Timeline:
    """Collects ``started``/``finished`` events (:meth:`take`) and draws them (:meth:`render`)."""

    origin: float
    bars: list[Bar] = field(factory=list)
    _open: dict[str, Bar] = field(factory=dict)
    _names: dict[str, str] = field(factory=dict)

    def name(self, job: str, label: str) -> None:
        """What to write in ``job``'s bar (its name, say) instead of its id."""
        self._names[job] = label

    def take(self, ev: Mapping[str, Any], now: float) -> None:
        kind, job = ev.get("event"), ev.get("job")
        if not isinstance(job, str):
            return
        if kind == "started":
            busy = {bar.row for bar in self._open.values()}
            row = next(r for r in range(len(busy) + 1) if r not in busy)
            bar = Bar(job, self._names.get(job, job), row, now - self.origin)
            self._open[job] = bar
            self.bars.append(bar)
        elif kind == "finished" and job in self._open:
            bar = self._open.pop(job)
            bar.end, bar.state = now - self.origin, str(ev.get("state"))

    def render(self, width: int = 60) -> list[str]:
        """The rows, a time axis under them, and nothing when no job started."""
        if not self.bars:
            return []
        first = min(bar.start for bar in self.bars)
        span = max(max((bar.end or bar.start) for bar in self.bars) - first, 1e-3)
        scale = width / span
        rows = max(bar.row for bar in self.bars) + 1
        cells = [[" "] * width for _ in range(rows)]
        for bar in sorted(self.bars, key=lambda b: b.start):
            self._draw(cells[bar.row], bar, first, scale)
        lines = [f"   w{row + 1} │{''.join(line)}│" for row, line in enumerate(cells)]
        left, right = f"{first:.2f}s", f"{first + span:.2f}s"
        lines.append(f"      {left}{' ' * max(width - len(left) - len(right) + 2, 1)}{right}")
        return lines

    @staticmethod
    def _draw(line: list[str], bar: Bar, first: float, scale: float) -> None:
        """Cells ``[begin, end)``: a bar that starts when another ends takes the next cell."""
        begin = min(round((bar.start - first) * scale), len(line) - 1)
        end = min(max(round(((bar.end or bar.start) - first) * scale), begin + 1), len(line))
        body = ["━"] * (end - begin)
        text = bar.label[: max(len(body) - 2, 0)]
        body[1 : 1 + len(text)] = text
        body[-1] = _ENDS.get(bar.state or "", "…")
        line[begin:end] = body
