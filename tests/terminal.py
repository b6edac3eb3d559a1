"""A command running on a real pseudo-terminal, and what a terminal would show of its output.

The live display of ``stepline run`` and ``stepline demo`` decides what to draw by asking
whether stdout is a terminal and how wide it is, so it is tested on a real pty: the child gets
the pty as its controlling terminal (Ctrl-C written to it becomes a SIGINT from the line
discipline, as when a user types it), and :mod:`pyte`, a VT100 emulator, replays the bytes into
the screen a user would see — cursor movements, erased lines and colours included.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyte

__all__ = ["STEPLINE", "Terminal"]

STEPLINE = [sys.executable, "-m", "stepline"]


def _controlling_terminal() -> None:
    """In the child, after ``setsid``: make stdin (the pty) its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """``argv`` on a fresh pty of ``columns`` x ``rows``; feed its output to a pyte screen."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        columns: int = 120,
        rows: int = 60,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        environ = {**(env if env is not None else os.environ), "TERM": "xterm-256color"}
        for name in ("COLUMNS", "LINES", "NO_COLOR"):
            environ.pop(name, None)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_controlling_terminal,  # the child is single-threaded: safe
            env=environ,
            cwd=cwd,
        )
        os.close(slave)
        self._master = master
        self.raw = bytearray()
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self._eof = False

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._master)

    def type(self, keys: bytes) -> None:
        """Keys typed on the terminal (``b"\\x03"`` is Ctrl-C)."""
        os.write(self._master, keys)

    def lines(self) -> list[str]:
        """The screen, one string per row, trailing blanks and blank rows at the end removed."""
        rows = [row.rstrip() for row in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, predicate: Callable[[Terminal], bool], timeout: float = 60) -> None:
        """Read output until ``predicate(self)`` holds; fails after ``timeout`` seconds (a guard
        against hanging, never a measurement)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self._eof:
                raise AssertionError(f"the program ended first; screen:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen in {timeout}s; screen:\n{self.text()}")
            self._read(min(0.5, max(deadline - time.monotonic(), 0)))

    def wait_for_text(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda term: text in term.text(), timeout)

    def finish(self, timeout: float = 60) -> int:
        """Read everything until the program exits; its exit status."""
        deadline = time.monotonic() + timeout
        while not self._eof:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout}s; screen:\n{self.text()}")
            self._read(0.5)
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 1))

    def _read(self, wait: float) -> None:
        ready, _, _ = select.select([self._master], [], [], wait)
        if not ready:
            return
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: every holder of the pty's other end has closed it
            chunk = b""
        if not chunk:
            self._eof = True
            return
        self.raw += chunk
        self._stream.feed(chunk)
