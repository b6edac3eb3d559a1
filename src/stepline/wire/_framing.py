"""Splitting a byte stream into protocol lines, with a cap on line length.

A hand-written splitter over 64 KiB chunks, because it is two orders of magnitude faster than
line iteration through ``trio.wrap_file`` (field notes: about 1.6 M lines/s against 9 k/s).
A line longer than ``max_line`` bytes is never held in memory: once the cap is passed the rest of
the line is discarded as it arrives, and the line is reported as :class:`TooLong` when it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from attrs import frozen

from .._record import ValueRecord

__all__ = ["CHUNK", "LineSplitter", "TooLong", "read_lines"]

CHUNK = 65536


@frozen(repr=False, eq=False)
class TooLong(ValueRecord):
    """Stands for a discarded line; ``length`` is at least the number of bytes seen."""

    length: int


class LineSplitter:
    """Feed chunks, get complete lines. Trailing ``\\r`` is stripped, blank lines are dropped."""

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._partial = b""
        self._discarded = 0  # > 0 while skipping the rest of an over-long line

    def feed(self, chunk: bytes | bytearray) -> list[bytes | TooLong]:
        lines = bytes(chunk).split(b"\n")
        rest = lines.pop()  # after the chunk's last newline: the start of a line, or b""
        out: list[bytes | TooLong] = []
        if lines:
            carried = self._partial
            if self._discarded:
                self._end_line(lines.pop(0), out)  # the end of an over-long line
            elif carried:
                lines[0] = carried + lines[0]
            self._partial = b""
            if lines:
                self._end_lines(lines, out, plain=b"\r" not in chunk and b"\r" not in carried)
        self._keep_partial(rest)
        return out

    def _end_lines(self, lines: list[bytes], out: list[bytes | TooLong], *, plain: bool) -> None:
        """Complete lines, in order. The common chunk (no ``\r``, no line over the cap) is
        filtered in C, without a call per line: a fifth of the reader's own time per line."""
        if plain and max(map(len, lines)) <= self._max:
            kept: list[bytes] = list(filter(bytes.strip, lines))  # blank ones dropped
            out += kept
            return
        for line in lines:
            self._end_line(line, out)

    def finish(self) -> list[bytes | TooLong]:
        """At EOF: a final line without ``\\n`` is still a line."""
        out: list[bytes | TooLong] = []
        if self._partial or self._discarded:
            self._end_line(self._partial, out)
        return out

    def _keep_partial(self, part: bytes) -> None:
        if self._discarded:
            self._discarded += len(part)
        elif len(self._partial) + len(part) > self._max + 1:  # +1: room for a trailing \r
            self._discarded = len(self._partial) + len(part)
            self._partial = b""
        else:
            self._partial += part

    def _end_line(self, line: bytes, out: list[bytes | TooLong]) -> None:
        if self._discarded:
            out.append(TooLong(self._discarded + len(line)))
            self._discarded = 0
            self._partial = b""
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max:
            out.append(TooLong(len(line)))
        elif line.strip():
            out.append(line)


async def read_lines(
    stream: trio.abc.ReceiveStream, max_line: int
) -> AsyncIterator[list[bytes | TooLong]]:
    """Yield batches of lines as they arrive, until EOF."""
    splitter = LineSplitter(max_line)
    while chunk := await stream.receive_some(CHUNK):
        lines = splitter.feed(chunk)
        if lines:
            yield lines
    tail = splitter.finish()
    if tail:
        yield tail
