"""Brief starts on threads of C: no Python thread between the event loop and the child.

A brief step (nothing to feed, no limits, no cgroup: the kind :mod:`._early` waits for) started
on a Python spawner thread cost about nine GIL round trips there, each queued behind the event
loop's Python, and the thread took the GIL again to take the request and hand the result back
(NOTES.md, Performance, "Session 11"). Here the event loop hands the request to a
:class:`~._briefc.Pool`, whose threads never take the GIL; a system task of the trio run waits
on the pool's notify pipe and hands every outcome that arrived meanwhile to its request's
``done``, on the event loop, as :mod:`._threads`' hand-over does: the run lane's
(:func:`submit_brief`) or a task's that awaits it (:func:`run_on_pool`).

The rules are those of :mod:`._early`: a cancel marks the request (:class:`BriefTicket`), so it
is not started if it has not been, and its wait ends if it is under way; the child, once
started, is always handed over, so its caller stops it. A request the pool could not start
(a failed start, a cancel before the start) goes to a spawner thread the Python way, which
starts it or tells why, as ever. One pool per trio run, made at its first brief start; its
threads end with the run (the system task closes it).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import outcome
import trio

from . import _early, _spawn
from ._threads import Done, Interrupt, call_on_spawner

__all__ = ["THREADS", "BriefTicket", "run_on_pool", "submit_brief"]

THREADS: Final = 6
"""The pool's threads: brief starts and waits that may overlap. Each holds its thread for its
child's run (up to :data:`~._early.WAIT`), and, holding no GIL, costs only its system calls:
against 4 (the Python spawners' number) 1.04x, against 8 (one per worker) 1.01x, over 2,000
``true`` jobs (NOTES.md, Performance, "Session 11")."""


class BriefTicket:
    """A request in the pool, for a cancel: :meth:`request` as :class:`~._threads.Interrupt`'s
    (the Python start it may fall back to watches ``interrupt``)."""

    __slots__ = ("_interrupt", "_pool", "_token")

    def __init__(self, pool: _RunPool, token: int, interrupt: Interrupt) -> None:
        self._pool, self._token, self._interrupt = pool, token, interrupt

    def request(self) -> None:
        self._interrupt.request()
        self._pool.interrupt(self._token)


class _RunPool:
    """This trio run's pool, its requests' callbacks, and the task that collects."""

    def __init__(self) -> None:
        from . import _briefc  # only where BRIEF_IN_C: built

        self._briefc = _briefc  # its outcome constants, for _collect
        self._pool = _briefc.Pool(THREADS)
        self._waiting: dict[int, tuple[Done, Callable[[], object], str]] = {}
        self._tokens = itertools.count()
        trio.lowlevel.spawn_system_task(self._collect, name="stepline brief starts")

    def submit(
        self,
        argv: Sequence[str],
        start: tuple[tuple[bytes, ...], list[bytes] | None],
        cwd: str | None,
        done: Done,
        fallback: Callable[[], object],
    ) -> int:
        token = next(self._tokens)
        paths, env = start
        wait_ms = max(1, round(_early.WAIT * 1e3))
        self._pool.submit(token, argv, paths, env, cwd, _spawn.devnull(), wait_ms)
        self._waiting[token] = (done, fallback, argv[0])
        return token

    def interrupt(self, token: int) -> None:
        self._pool.interrupt(token)

    async def _collect(self) -> None:
        failed, skipped, ended = self._briefc.FAILED, self._briefc.SKIPPED, self._briefc.ENDED
        try:
            while True:
                await trio.lowlevel.wait_readable(self._pool.fileno())
                for token, pid, stdout, stderr, result, _, _ in self._pool.collect():
                    done, fallback, program = self._waiting.pop(token)
                    if result in (failed, skipped):
                        if result == failed:
                            _spawn.forget_program(program)  # it may have moved
                        call_on_spawner(fallback, done)  # the Python start, which tells why
                        continue
                    child = _spawn.brief_child(pid, stdout, stderr)
                    done(outcome.Value((child, result == ended)))
        finally:
            self._pool.close()


_POOL: trio.lowlevel.RunVar[_RunPool] = trio.lowlevel.RunVar("stepline_brief_pool")


def submit_brief(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    interrupt: Interrupt,
    done: Done,
    fallback: Callable[[], object],
) -> BriefTicket | None:
    """Start a brief step on the pool: ``done`` gets ``(child, ended)`` on the event loop, or
    ``fallback`` runs on a spawner thread (the Python start) and ``done`` gets its outcome.
    None: the pool cannot take it (:func:`~._spawn.brief_start`); the caller starts it the
    Python way."""
    start = _spawn.brief_start(argv, env, cwd)
    if start is None:
        return None
    try:
        pool = _POOL.get()
    except LookupError:
        try:
            pool = _RunPool()
        except OSError:  # no thread to spare: the spawner threads start it
            return None
        _POOL.set(pool)
    try:
        token = pool.submit(argv, start, cwd, done, fallback)
    except ValueError:  # an embedded NUL: the Python start says so
        return None
    return BriefTicket(pool, token, interrupt)


async def run_on_pool(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    interrupt: Interrupt,
    fallback: Callable[[], tuple[_spawn.Child, bool]],
) -> tuple[_spawn.Child, bool] | None:
    """:func:`submit_brief` for a task that awaits the outcome, as
    :func:`~._threads.run_on_spawner` awaits a spawner's call: never abandoned (a cancel
    requests the ticket and waits for the child, which is handed over to be stopped; the cancel
    lands at the caller's next checkpoint). None: the pool cannot take it."""
    task = trio.lowlevel.current_task()
    done = functools.partial(trio.lowlevel.reschedule, task)
    ticket = submit_brief(argv, env, cwd, interrupt, done, fallback)
    if ticket is None:
        return None

    def abort(_: object) -> trio.lowlevel.Abort:
        ticket.request()
        return trio.lowlevel.Abort.FAILED  # the outcome reschedules us

    started: tuple[_spawn.Child, bool] = await trio.lowlevel.wait_task_rescheduled(abort)
    return started
