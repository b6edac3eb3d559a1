"""A child's output and input: both pipes drained at once and bounded, stdin fed, all cancellable.

Capture lasts until EOF on both pipes, like :func:`subprocess.run`: a grandchild that keeps them
open (``sh -c 'sleep 3 & echo hi'``) makes us wait for it (a step ``timeout`` bounds it). At most
``cap`` bytes of each stream are kept; the rest is read and thrown away, so a chatty child never
blocks on a full pipe and memory stays bounded. A cut may split a UTF-8 sequence: the partial
character at the end then decodes as U+FFFD.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
from collections.abc import AsyncIterator, Callable

import attrs
import trio

from ._base import OutputSink, StreamName

__all__ = ["Capture", "ReadEnd", "communicate"]

_CHUNK = 1 << 16


class ReadEnd:
    """Our end of a child's stdout or stderr pipe, read until EOF (non-blocking once read).

    Not trio's ``FdStream``: :func:`_drain_outputs` reads both pipes of a child as epoll reports
    them ready, so it needs a read that never waits; and without the stream object and its
    conflict detector a ``true`` job costs less (NOTES.md, Performance). The pipe is made
    non-blocking only when a capture begins (:func:`communicate`): a step that ended silently on
    its spawner thread (:mod:`._early`) is never read, and saves the system call.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def unblock(self) -> None:
        """Make reads return at once. The pipe's status flags are known (``pipe2`` set none),
        so one ``F_SETFL`` does it, where ``os.set_blocking`` reads them first."""
        fcntl.fcntl(self.fd, fcntl.F_SETFL, os.O_NONBLOCK)

    def read_ready(self) -> bytes | None:
        """The next chunk (at most 64 KiB) without waiting; b"" at EOF, None if none is there."""
        try:
            return os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return None

    async def read(self) -> bytes:
        """The next chunk, waiting for it if need be; b"" at EOF. Always a checkpoint: the wait,
        or one of its own when the chunk was there already."""
        chunk = self.read_ready()
        if chunk is not None:
            await trio.lowlevel.checkpoint()  # others run, and a cancel lands, between chunks
            return chunk
        while chunk is None:
            await trio.lowlevel.wait_readable(self.fd)  # a checkpoint too
            chunk = self.read_ready()
        return chunk

    def close(self) -> None:
        """Close the pipe; idempotent. Only its one reader ever waits on it, and not now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@attrs.define
class Capture:
    """One output stream, bounded: keeps the first ``cap`` bytes and drops the rest; every chunk
    also goes to ``sink`` (as ``stream``), which may ask the reader to wait."""

    cap: int
    stream: StreamName = "stdout"
    sink: OutputSink | None = None
    data: bytearray = attrs.field(factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        if self.sink is not None:
            self.sink.write(self.stream, chunk)
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk

    def ended(self) -> None:
        if self.sink is not None:
            self.sink.eof(self.stream)

    async def drain(self, pipe: ReadEnd) -> None:
        """Read to EOF. Discarding beyond the cap keeps the child from blocking on a full pipe;
        a congested sink holds the reading (and so the child) back."""
        try:
            while chunk := await pipe.read():
                self.add(chunk)
                await _relieve(self.sink)
            self.ended()
        finally:
            pipe.close()

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _relieve(sink: OutputSink | None) -> None:
    """Wait while ``sink`` is congested: the pipes are not read meanwhile, so the child blocks."""
    if sink is not None and sink.congested:
        await sink.wait_writable()


async def communicate(
    feed: trio.abc.SendStream | None,
    stdout: ReadEnd,
    stderr: ReadEnd,
    stdin: str | None,
    cap: int,
    sink: OutputSink | None = None,
) -> tuple[Capture, Capture]:
    """Feed ``stdin`` into ``feed`` (our end of the child's stdin pipe, if it has one) and drain
    ``stdout`` and ``stderr`` concurrently, so no pipe can fill up and deadlock.

    The calling task drains both outputs (:func:`_drain_outputs`); only feeding stdin, which
    few steps do, takes a task of its own. ``sink`` gets every chunk as it is read.
    """
    out, err = Capture(cap, "stdout", sink), Capture(cap, "stderr", sink)
    stdout.unblock()
    stderr.unblock()
    if feed is None or stdin is None:
        await _drain_outputs(stdout, stderr, out, err)
        return out, err
    async with _open_nursery() as nursery:
        nursery.start_soon(_feed, feed, stdin.encode("utf-8"))
        await _drain_outputs(stdout, stderr, out, err)
    return out, err


# Linux; elsewhere a second task drains stderr
_EPOLL: Callable[[int], select.epoll] | None = getattr(select, "epoll", None)


async def _drain_outputs(stdout: ReadEnd, stderr: ReadEnd, out: Capture, err: Capture) -> None:
    """Read stdout and stderr to EOF, both at once, in this one task where Linux allows.

    Both must be read concurrently: a child blocked on a full stderr pipe never closes stdout.
    A second task for stderr (a nursery per process) was a quarter of a ``{"run": ["true"]}``
    job's cost (NOTES.md, Performance). So both pipes go into a private epoll instead, the way
    :meth:`subprocess.Popen.communicate` selects over both in one thread, and trio waits on that
    epoll's one fd like on any other. Each wait is a checkpoint, so a child that never stops
    writing still lets others run and a cancel land.
    """
    poller = _open_poller()
    if poller is None:
        await _drain_in_two_tasks(stdout, stderr, out, err)
        return
    pending = {stdout.fd: (stdout, out), stderr.fd: (stderr, err)}
    with poller:
        for fd in pending:
            poller.register(fd, select.EPOLLIN)
        while pending:
            await trio.lowlevel.wait_readable(poller.fileno())
            for fd, _events in poller.poll(0):
                pipe, capture = pending[fd]
                chunk = pipe.read_ready()
                if chunk:
                    capture.add(chunk)
                elif chunk is not None:  # EOF: every writer (the child, its children) closed
                    poller.unregister(fd)
                    pipe.close()
                    del pending[fd]
                    capture.ended()
            await _relieve(out.sink)


def _open_poller() -> select.epoll | None:
    """A private epoll for one child's pipes; None where there is no epoll (not Linux) or no
    descriptor left for one: then the second task does it, which needs none."""
    if _EPOLL is None:
        return None
    try:
        return _EPOLL(2)
    except OSError:
        return None


async def _drain_in_two_tasks(stdout: ReadEnd, stderr: ReadEnd, out: Capture, err: Capture) -> None:
    async with _open_nursery() as nursery:
        nursery.start_soon(err.drain, stderr)
        await out.drain(stdout)


@contextlib.asynccontextmanager
async def _open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose group of nothing but ``Cancelled`` comes out as one bare ``Cancelled``.

    A cancelled nursery wraps its tasks' ``Cancelled`` in a group; callers of ``run_process`` should
    see a plain cancellation, as from any other checkpoint, so ``except trio.Cancelled`` works.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        _raise_if_only_cancelled(group)
        raise


def _raise_if_only_cancelled(group: BaseExceptionGroup[BaseException]) -> None:
    cancelled, rest = group.split(trio.Cancelled)
    if cancelled is None or rest is not None:
        return
    leaf: BaseException = cancelled
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    raise leaf from None


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    """Write the stdin text, then close the pipe so the child sees EOF.

    A child that exits or closes its stdin without reading makes the write fail with a broken
    pipe; that is the child's business, not an error of ours, so it is swallowed.
    """
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)
