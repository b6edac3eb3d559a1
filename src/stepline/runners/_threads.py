"""Spawner threads: a few threads that fork and exec for the event loop, handed work directly.

Why not :func:`trio.to_thread.run_sync`: it was about 40 µs of the event loop's CPU per call on
this VM (a limiter, a context copy, a thread-cache job and its bookkeeping on both sides), paid
by every ``run`` step (NOTES.md, Performance). Here a call is one queue put, one park, and one
``run_sync_soon`` from the thread that reschedules the task with the result.

Semantics are those of ``to_thread.run_sync`` without abandoning: a cancel waits for the call to
end, the call's result is returned, and the cancel is delivered at the caller's next checkpoint.
So a child whose start was under way is always handed to its caller, who stops it. The threads
are shared by the whole process (every runner's spawns overlap at most :data:`SPAWNERS` at a
time), started at the first call, and are daemons that wait on their queue when idle.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Final, TypeVar

import outcome
import trio

__all__ = ["SPAWNERS", "run_on_spawner"]

SPAWNERS: Final = 4
"""Spawner threads at most: spawns that may overlap (each one a vfork and an exec)."""

T = TypeVar("T")
_Work = tuple[Callable[[], object], trio.lowlevel.Task, trio.lowlevel.TrioToken]

_queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_starting = threading.Lock()


async def run_on_spawner(fn: Callable[[], T]) -> T:
    """``fn()`` on a spawner thread; its result or exception. Never abandoned (module doc)."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()
    if not _threads:
        _start_threads()
    _queue.put((fn, task, token))

    def abort(_: object) -> trio.lowlevel.Abort:
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
