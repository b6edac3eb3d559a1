"""Terminal styling for the human-facing commands (``run``, ``demo``): colour only on a tty.

Colour is on when the stream is a terminal, ``NO_COLOR`` is unset (https://no-color.org) and
``TERM`` is not ``dumb``; off otherwise, so piped or captured output stays plain text.
"""

from __future__ import annotations

import errno
import io
import os
import select
import stat
from collections.abc import Callable
from typing import Final, TextIO

import trio

__all__ = ["STYLES", "Output", "is_tty", "paint", "use_color", "wait_reader_gone"]

STYLES: Final = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def use_color(stream: TextIO) -> bool:
    return is_tty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str, on: bool) -> str:
    """``text`` in ``style`` (a key of :data:`STYLES`) when ``on``; unchanged otherwise."""
    return f"\x1b[{STYLES[style]}m{text}\x1b[0m" if on else text


class Output:
    """A text stream written whole lines at a time, where a reader that went away (``| head``)
    becomes a flag and one call of ``on_broken`` instead of a ``BrokenPipeError`` traceback.

    Once broken, the descriptor is pointed at ``/dev/null``: the interpreter flushes
    ``sys.stdout`` at exit, and that flush would report the broken pipe again.
    """

    def __init__(self, stream: TextIO, on_broken: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.on_broken = on_broken
        self.broken = False

    def write(self, text: str) -> None:
        if self.broken or not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self._break()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._break()

    def close_broken(self) -> None:
        """The reader went away although nothing was written (see :func:`wait_reader_gone`)."""
        if not self.broken:
            self._break()

    def _break(self) -> None:
        self.broken = True
        try:
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass  # not a real descriptor (a StringIO in tests): nothing would flush it
        if self.on_broken is not None:
            self.on_broken()


async def wait_reader_gone(stream: TextIO) -> None:
    """Return once the pipe (or socket) behind ``stream`` has lost its reader; never for a
    terminal or a file.

    A closed reader shows only when something is written, and ``stepline run`` may have nothing
    to write for an hour while its jobs run: ``stepline run | head -1`` would keep them running
    all that time. A private epoll with no events asked still reports ``EPOLLERR``, which Linux
    raises on a pipe's write end once its last reader is gone; trio waits on that epoll's own
    descriptor.
    """
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        await trio.sleep_forever()
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) or not hasattr(select, "epoll"):
        await trio.sleep_forever()
    with select.epoll() as watch:
        watch.register(fd, 0)  # EPOLLERR and EPOLLHUP are reported whatever is asked
        while not watch.poll(0):
            await trio.lowlevel.wait_readable(watch.fileno())
