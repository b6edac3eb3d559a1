"""A job's output lines, numbered and bounded: what the ``logs`` op answers from.

Every line a job's ``run`` steps write is numbered from 1 in the order stepline read it, whether
it was streamed or not. Only the most recent lines are kept (:data:`MAX_LINES` lines and
:data:`MAX_CHARS` characters of text per job, whichever is reached first); ``trimmed`` counts the
lines that were numbered and are no longer kept, so a reader sees the gap instead of guessing.
Kept numbers are always contiguous: the oldest go first, and lines skipped unread (a flood, see
:mod:`stepline.engine._output`) push out everything older than them.

A finished job keeps its log for as long as its record is kept; the job table also counts the
log against ``--keep-bytes`` and takes it away from the oldest records first.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Final

__all__ = ["MAX_CHARS", "MAX_LINES", "PAGE_CHARS", "JobLog", "LogLine"]

MAX_LINES: Final = 10_000
"""Lines kept per job."""

MAX_CHARS: Final = 1 << 20
"""Characters of line text kept per job."""

PAGE_CHARS: Final = 256 << 10
"""A ``logs`` reply holds lines up to about this many characters (at least one line)."""

_LINE_OVERHEAD: Final = 80
"""Bytes a kept line costs beyond its text (tuple, float, str headers), for the byte budget."""

LogLine = tuple[int, float, str, str, str]  # n, ts, step, stream, line


class JobLog:
    """One job's most recent output lines (see the module docstring)."""

    __slots__ = ("_chars", "_count", "_lines", "_pending", "max_chars", "max_lines")

    def __init__(self, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self._lines: deque[LogLine] = deque()
        self._count = 0  # lines numbered so far: the last line's n
        self._chars = 0
        # Output read but not split into lines yet (floods held raw), made lines before a read.
        self._pending: list[Callable[[], None]] = []

    def add(self, ts: float, step: str, stream: str, line: str) -> int:
        """Number and keep one line (older lines give way); returns its number."""
        self._count += 1
        self._lines.append((self._count, ts, step, stream, line))
        self._chars += len(line)
        lines = self._lines
        while len(lines) > self.max_lines or self._chars > self.max_chars:
            self._chars -= len(lines.popleft()[4])
        return self._count

    def skip(self, count: int) -> None:
        """``count`` lines were written after every kept one and are not kept: number them, and
        let everything older go too, so the kept numbers stay contiguous."""
        self._count += count
        self._lines.clear()
        self._chars = 0

    def drop(self) -> None:
        """Give up every kept line (the job table's byte budget); they count as trimmed."""
        self._lines.clear()
        self._chars = 0

    def hold(self, make_lines: Callable[[], None]) -> None:
        """``make_lines`` turns output read but not yet split into lines; called before a read."""
        self._pending.append(make_lines)

    @property
    def count(self) -> int:
        """Lines numbered so far (the last line's ``n``)."""
        self._settle()
        return self._count

    @property
    def trimmed(self) -> int:
        """Lines numbered and no longer kept."""
        self._settle()
        return self._count - len(self._lines)

    @property
    def size(self) -> int:
        """About how many bytes the kept lines take (for the job table's budget)."""
        return self._chars + _LINE_OVERHEAD * len(self._lines)

    def page(self, after: int, max_chars: int = PAGE_CHARS) -> tuple[list[dict[str, Any]], int]:
        """The kept lines numbered after ``after``, up to about ``max_chars`` characters, and
        the ``after`` to ask with next: the last line's number, or, when no kept line is newer
        than ``after``, the last number given (the lines in between are trimmed)."""
        self._settle()
        lines = self._lines
        if not lines or lines[-1][0] <= after:
            return [], max(after, self._count)
        start = max(0, after - lines[0][0] + 1)
        page: list[dict[str, Any]] = []
        chars = 0
        last = after
        for n, ts, step, stream, line in itertools.islice(lines, start, None):
            if page and chars + len(line) > max_chars:
                break
            page.append({"n": n, "ts": ts, "step": step, "stream": stream, "line": line})
            chars += len(line)
            last = n
        return page, last

    def tail(self, step: str, stream: str, chars: int) -> str:
        """The end of what ``step`` wrote to ``stream`` among the kept lines: about the last
        ``chars`` characters, joined with newlines (for the error of a stopped process)."""
        self._settle()
        picked: list[str] = []
        size = 0
        for _n, _ts, line_step, line_stream, line in reversed(self._lines):
            if line_step == step and line_stream == stream:
                picked.append(line)
                size += len(line) + 1
                if size >= chars:
                    break
        return "\n".join(reversed(picked))[-chars:]

    def _settle(self) -> None:
        pending, self._pending = self._pending, []
        for make_lines in pending:
            make_lines()
