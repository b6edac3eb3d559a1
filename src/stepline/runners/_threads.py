"""Spawner threads: a few threads that fork and exec for the event loop, handed work directly.

Why not :func:`trio.to_thread.run_sync`: it was about 40 µs of the event loop's CPU per call on
this VM (a limiter, a context copy, a thread-cache job and its bookkeeping on both sides), paid
by every ``run`` step (NOTES.md, Performance). Here a call is one queue put and one park; the
thread hands the result back through :class:`_Returns`, which reschedules the tasks of every
result that arrived meanwhile from one ``run_sync_soon``: each of those wakes the event loop
(a byte on trio's wake-up socket, a pass of its scheduler), and results that arrive while one
is on its way ride along.

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
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar

import outcome
import trio

__all__ = ["SPAWNERS", "Interrupt", "call_on_spawner", "run_on_spawner"]

SPAWNERS: Final = 4
"""Spawner threads at most: spawns that may overlap (each one a vfork and an exec)."""

T = TypeVar("T")

Done = Callable[[outcome.Outcome[object]], None]
"""What :func:`call_on_spawner` calls with a call's outcome, on the event loop."""


class _Returns:
    """Results of spawner calls on their way back to one trio run, handed over in batches.

    A thread appends its result and asks for a hand-over only if none is pending; the
    hand-over (on the event loop) clears that mark *before* taking what is there, so a result
    appended meanwhile is either taken by it or asks for the next one. Both sides run under
    the GIL, and a deque's append and popleft are atomic.
    """

    __slots__ = ("_pending", "_ready", "_token")

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self._token = token
        self._ready: deque[tuple[trio.lowlevel.Task | Done, outcome.Outcome[object]]] = deque()
        self._pending = False

    def put(self, to: trio.lowlevel.Task | Done, result: outcome.Outcome[object]) -> None:
        """On a spawner thread: ``to`` (a task, or a :data:`Done` callback) gets ``result``
        (soon, on its event loop)."""
        self._ready.append((to, result))
        if not self._pending:
            self._pending = True
            self._token.run_sync_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._pending = False
        ready = self._ready
        while ready:
            to, result = ready.popleft()
            if type(to) is trio.lowlevel.Task:
                trio.lowlevel.reschedule(to, result)
            else:
                to(result)


_RETURNS: trio.lowlevel.RunVar[_Returns] = trio.lowlevel.RunVar("stepline_spawner_returns")
_Work = tuple[Callable[[], object], "trio.lowlevel.Task | Done", _Returns]


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
    _queue.put((fn, task, _returns()))

    def abort(_: object) -> trio.lowlevel.Abort:
        if interrupt is not None:
            interrupt.request()
        return trio.lowlevel.Abort.FAILED  # the thread reschedules us when fn is done

    result: T = await trio.lowlevel.wait_task_rescheduled(abort)  # the outcome, unwrapped
    return result


def call_on_spawner(fn: Callable[[], object], done: Done) -> None:
    """``fn()`` on a spawner thread, then ``done(its outcome)`` on this event loop, from the
    batched hand-over (:class:`_Returns`), with no task waiting for it: the run lane's way
    (:mod:`stepline.engine._run_lane`). ``done`` runs inside trio's ``run_sync_soon``
    callback, so it must not raise (trio would end the run) and must not block."""
    _queue.put((fn, done, _returns()))


def _returns() -> _Returns:
    """This trio run's hand-over, made at its first spawner call."""
    try:
        returns = _RETURNS.get()
    except LookupError:
        returns = _Returns(trio.lowlevel.current_trio_token())
        _RETURNS.set(returns)
    if not _threads:
        _start_threads()
    return returns


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
        fn, to, returns = _queue.get()
        try:  # outcome.capture's work, without its call (this runs per spawn)
            result: outcome.Outcome[object] = outcome.Value(fn())
        except BaseException as exc:  # handed to the caller, as outcome.capture does
            result = outcome.Error(exc)
        returns.put(to, result)
        del fn, to, returns, result  # hold nothing of a finished call while idle
