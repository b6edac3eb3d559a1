"""Opening the process's stdin and stdout as trio streams, safely.

``trio.lowlevel.FdStream`` makes its file description non-blocking. On a pipe or terminal shared
with the parent shell that flag would leak to the other holders (a tty's fd 1 and 2 then raise
``BlockingIOError`` in loggers), so FIFOs and character devices are reopened through
``/proc/self/fd`` to get a description of our own. A regular file is ``dup``-ed instead: reopening
it would reset the offset and overwrite earlier output. A closed fd 0 reads as immediate EOF.

The protocol stream is then moved off fd 1: fd 1 becomes a copy of stderr and ``sys.stdout`` is
pointed at stderr, so a stray ``print`` or a C library writing to fd 1 can never corrupt the event
stream. Nothing but protocol reaches stdout.
"""

from __future__ import annotations

import os
import stat
import sys

import trio

__all__ = ["EmptyStream", "open_stdin", "open_stdout", "reserve_standard_fds"]


class EmptyStream(trio.abc.ReceiveStream):
    """Stands in for a closed stdin: EOF at once."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _private_fd(fd: int, flags: int) -> int:
    """A descriptor for ``fd``'s file whose O_NONBLOCK flag we may change freely."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        try:
            return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)
        except OSError:
            pass  # no /proc (or a socket-like FIFO): share the description, the best we can do
    return os.dup(fd)


def reserve_standard_fds() -> frozenset[int]:
    """Put ``/dev/null`` on whichever of fds 0, 1 and 2 the process was started without.

    Call it first thing: a closed standard fd is simply the lowest free number, so the next
    file opened takes it — trio's epoll fd took fd 0 in a test, and stepline then "read its
    commands" from epoll (EINVAL, a traceback). Reserved, a closed stdin reads as EOF, as the
    protocol wants. Returns the fds that were closed, so the caller can refuse to serve without
    a stdout.
    """
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    return frozenset(closed)


def open_stdin() -> trio.abc.ReceiveStream:
    try:
        fd = _private_fd(0, os.O_RDONLY)
    except OSError:
        return EmptyStream()
    return trio.lowlevel.FdStream(fd)


def open_stdout() -> trio.abc.SendStream:
    fd = _private_fd(1, os.O_WRONLY)
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return trio.lowlevel.FdStream(fd)
