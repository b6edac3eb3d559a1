"""A spawner thread's short wait for a fresh child's end, so a short silent step needs no capture.

Most ``run`` steps of a busy server are short, and many write nothing: for such a step the event
loop's capture (a private epoll, its registration with trio, two wake-ups, the reads of two
EOFs) was the largest part of its cost (NOTES.md, Performance). The thread that started the
child already holds it, so it waits a little longer, in one ``poll`` without the GIL, on the
child's two output pipes and the thread's wake-up pipe (:class:`~._threads.Interrupt`), then
asks ``waitid`` (``WNOWAIT``) whether the child exited, and waits on its pidfd if not yet:

* both pipes hung up with nothing in them, and the child exited: the step ended silently. The
  caller reaps it (the thread never reaps: the stop path's rules hold) and reads nothing;
* anything else (output to read, :data:`WAIT` passed, a cancel): the wait ends at once and the
  caller captures as before, from the first byte. The thread reads nothing, so output, its
  order, its bounds and its backpressure are the loop's as ever.

A cancel writes the wake-up pipe: the wait ends within microseconds, so a cancel is not held
up by it. Only steps with no stdin to feed, no limits and no cgroup wait here: those need the
loop right after the start (rlimits, joining a cgroup, feeding).

Where the C start is built, the pool of C threads (:mod:`._pool`) starts such a step and waits
the same way, by the same rules, without the GIL; :func:`ended_soon` is the wait of the Python
start.
"""

from __future__ import annotations

import os
import select
import time
from typing import Final

from ._spawn import Child
from ._threads import Interrupt, drain_wake_pipe

__all__ = ["WAIT", "ended_soon"]

WAIT: Final = 0.005
"""How long a spawner thread waits for its child's end (seconds): a ``true`` takes about a
millisecond here; a longer one then costs this much of a spawner's time, not of the CPU."""


def ended_soon(child: Child, interrupt: Interrupt, wait: float | None = None) -> bool:
    """On the spawner thread, right after the start: did ``child`` exit within ``wait``
    seconds (None: :data:`WAIT`), having written nothing and left no one holding its output
    pipes?

    Written flat (no helper calls per ``poll``, no set of pending pipes): it runs on every
    short step, and each Python call on a thread just woken costs a microsecond or more here."""
    deadline = time.monotonic() + (WAIT if wait is None else wait)
    wake = interrupt.arm()
    try:
        if interrupt.requested:
            return False
        poller = select.poll()
        poller.register(child.stdout.fd, select.POLLIN)
        poller.register(child.stderr.fd, select.POLLIN)
        poller.register(wake, select.POLLIN)
        open_pipes = 2
        while open_pipes:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd, flags in poller.poll(int(min(left, 1.0) * 1000) + 1):
                if fd == wake:
                    drain_wake_pipe(wake)
                    return False
                if flags & select.POLLIN:
                    return False  # output to read: the caller reads it (module docstring)
                poller.unregister(fd)  # hung up, empty: every writer closed it
                open_pipes -= 1
        return _exits(child, poller, wake, deadline)
    finally:
        interrupt.disarm()


def _exits(child: Child, poller: select.poll, wake: int, deadline: float) -> bool:
    """Both pipes hung up: the child is exiting (they close before it becomes a zombie, a few
    microseconds apart), or closed them and goes on. Look without reaping (``WNOWAIT``: the
    caller reaps); if it has not exited yet, wait on its pidfd (opened only now: most children
    have exited by the first look), or where there is none look again once a millisecond."""
    if _exited(child.pid):
        return True
    pidfd = child.pidfd()
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    while True:
        events = _poll(poller, deadline, 1.0 if pidfd is not None else 0.001)
        if any(fd == wake for fd, _ in events):
            drain_wake_pipe(wake)
            return False
        if _exited(child.pid):
            return True
        if time.monotonic() >= deadline:
            return False


def _exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _poll(poller: select.poll, deadline: float, at_most: float = 1.0) -> list[tuple[int, int]]:
    """``poller.poll`` until ``deadline`` (monotonic) but at most ``at_most`` s; [] once past."""
    left = min(deadline - time.monotonic(), at_most)
    return poller.poll(int(left * 1000) + 1) if left > 0 else []
