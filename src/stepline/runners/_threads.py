"""Spawner threads: a few threads that fork and exec for the event loop, handed work directly.

Why not :func:`trio.to_thread.run_sync`: it was about 40 µs of the event loop's CPU per call on
this VM (a limiter, a context copy, a thread-cache job and its bookkeeping on both sides), paid
by every ``run`` step (NOTES.md, Performance). Here a call is one queue put, one park, and one
``run_sync_soon`` from the thread that reschedules the task with the result.

Semantics are those of ``to_thread.run_sync`` without abandoning: a cancel waits for the call to
end, the call's result is returned, and the cancel is delivered at the caller's next checkpoint.
So a child whose start was under way is always handed to its caller, who stops it. A call that
waits (for a fresh child's end, :mod:`._early`) is cut short by the cancel instead: it waits on
its thread's :class:`Interrupt` too, which the cancel sets. The threads are shared by the whole
process (every runner's spawns overlap at most :data:`SPAWNERS` at a time), started at the first
call, and are daemons that wait on their queue when idle.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Final, TypeVar

import outcome
import trio

__all__ = ["SPAWNERS", "Interrupt", "run_on_spawner"]

SPAWNERS: Final = 4
"""Spawner threads at most: spawns that may overlap (each one a vfork and an exec)."""

T = TypeVar("T")
_Work = tuple[Callable[[], object], trio.lowlevel.Task, trio.lowlevel.TrioToken]


class Interrupt:
    """How the event loop cuts short a wait on a spawner thread: the caller's cancel.

    The thread arms it with its wake-up pipe's write end (:meth:`arm`) while it waits, and
    waits on the read end beside what it waits for; :meth:`request` (on the loop) sets
    ``requested`` and writes a byte if armed. Whichever of the two comes first, the other sees it
    (both run under the GIL), so a cancel is never missed. A byte written just after a wait
    ended only wakes the thread's next wait early, which then gives up waiting: safe.
    """

    __slots__ = ("_fd", "requested")

    def __init__(self) -> None:
        self.requested = False
        self._fd = -1

    def request(self) -> None:
        self.requested = True
        if self._fd >= 0:
            with contextlib.suppress(BlockingIOError):  # a byte is there already
                os.write(self._fd, b"!")

    def arm(self) -> int:
        """On a spawner thread, before a wait: the fd to wait on beside what is waited for.
        :meth:`disarm` must follow (a ``finally``; not a context manager: this is paid per step)."""
        read_end, self._fd = _wake_pipe()
        return read_end

    def disarm(self) -> None:
        self._fd = -1


def drain_wake_pipe(fd: int) -> None:
    """Read the bytes an :class:`Interrupt` wrote (after a wait saw ``fd`` readable)."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 64):
            pass


_local = threading.local()


def _wake_pipe() -> tuple[int, int]:
    """This thread's wake-up pipe (non-blocking), made at its first wait."""
    pipe: tuple[int, int] | None = getattr(_local, "wake", None)
    if pipe is None:
        pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _local.wake = pipe
    return pipe


_queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_starting = threading.Lock()


async def run_on_spawner(fn: Callable[[], T], interrupt: Interrupt | None = None) -> T:
    """``fn()`` on a spawner thread; its result or exception. Never abandoned (module doc); a
    cancel meanwhile requests ``interrupt`` (which ``fn`` may watch)."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    if not _threads:
        _start_threads()
    _queue.put((fn, task, token))

    def abort(_: object) -> trio.lowlevel.Abort:
        if interrupt is not None:
            interrupt.request()
        return trio.lowlevel.Abort.FAILED  # the thread reschedules us when fn is done

    result: T = await trio.lowlevel.wait_task_rescheduled(abort)  # the outcome, unwrapped
    return result


def _start_threads() -> None:
    with _starting:
        if _threads:
            return  # another trio run (in another thread) started them meanwhile
        for _ in range(SPAWNERS):
            _start_one()


def _start_one() -> None:
    thread = threading.Thread(target=_serve, name="stepline spawner", daemon=True)
    thread.start()
    _threads.append(thread)


def _forget_threads() -> None:
    """In a forked child: the threads were not copied, and the queue or the lock may have been
    held by one of them at the fork. Start afresh, so the child's first spawn starts its own."""
    global _queue, _starting
    _queue = queue.SimpleQueue()
    _starting = threading.Lock()
    _threads.clear()


os.register_at_fork(after_in_child=_forget_threads)


def _serve() -> None:
    while True:
        fn, task, token = _queue.get()
        result = outcome.capture(fn)
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)
        del fn, task, token, result  # hold nothing of a finished call while idle
