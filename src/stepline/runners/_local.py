"""The local runner: each ``run`` step's child leads its own process group on this machine.

The first implementation of the :class:`~stepline.runners._base.Runner` seam, and the default.
Starting a child is :mod:`._spawn`'s job, capturing its output :mod:`._capture`'s; this module
holds the lifecycle rules and the registry of live groups.

Why not :func:`trio.run_process`? Its default stop signals only the direct child and then waits
five seconds, which leaves grandchildren orphaned (``sh -c 'sleep 31; true'`` left a ``sleep``
behind, trio issue #3237), and it buffers output without a bound. Here:

* Every child leads its own process group (``start_new_session=True``), and a stop signals the
  whole group: SIGTERM, up to ``grace`` seconds for the leader to exit, then SIGKILL. Once the
  leader has exited the group is SIGKILLed once more, so stray grandchildren go too. The stop runs
  in a shielded cancel scope, so it completes although we are being cancelled, and the
  ``Cancelled`` then propagates untouched.
* The child never inherits our fd 0 or fd 1 (stepline's stdout is the protocol stream): stdin is a
  pipe carrying the given text, or ``/dev/null``; stdout and stderr are pipes.
* At most ``output_cap`` bytes (:data:`~stepline.runners._base.OUTPUT_CAP`, 1 MiB) of each of
  stdout and stderr are kept. The rest is read and thrown away, so a chatty child never blocks on
  a full pipe and memory stays bounded; ``truncated`` says it happened. A cut may split a UTF-8
  sequence: the partial character at the end then decodes as U+FFFD.
* Like :func:`subprocess.run`, capture lasts until EOF on both pipes: a grandchild that keeps
  them open (``sh -c 'sleep 3 & echo hi'``) makes us wait for it. That is accepted; it is what a
  shell user expects, and a step ``timeout`` bounds it.
* A normal exit does not kill the group: a grandchild that closed its copies of the pipes and
  outlived its parent is left alone, as a shell would. Only a stop (cancellation, error) reaps.
  A grandchild that starts its own session (``setsid``) leaves the group and is out of reach.
* A :class:`ProcessGroups` registry holds the live groups so that a hard stop (a second SIGINT)
  can SIGKILL them all at once, whatever their grace.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import trio

from ._base import Launch, ProcessResult
from ._capture import communicate
from ._spawn import Child, spawn

__all__ = ["LocalProcess", "LocalRunner", "ProcessGroups"]


class ProcessGroups:
    """Registry of live child process groups, so a hard stop can SIGKILL them all at once.

    :class:`LocalRunner` adds a group when its child starts and removes it once the child is
    reaped. After :meth:`kill_all` the registry stays "killing": a group added later (a child
    that was starting at that very moment) is SIGKILLed on arrival, and stops skip the grace.
    """

    def __init__(self) -> None:
        self._pgids: set[int] = set()
        self.killing = False

    def add(self, pgid: int) -> None:
        """Register a live group; SIGKILL it at once if :meth:`kill_all` was already called."""
        self._pgids.add(pgid)
        if self.killing:
            _killpg(pgid, signal.SIGKILL)

    def discard(self, pgid: int) -> None:
        """Forget a group (its leader was reaped); unknown ids are ignored."""
        self._pgids.discard(pgid)

    def kill_all(self) -> None:
        """SIGKILL every registered group now.

        Synchronous, so a signal handler task can call it without awaiting. A process that is
        waiting out its grace then finishes promptly: its child dies, so its wait returns.
        """
        self.killing = True
        for pgid in list(self._pgids):
            _killpg(pgid, signal.SIGKILL)

    def __len__(self) -> int:
        return len(self._pgids)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._pgids))


class LocalRunner:
    """Starts each process as the leader of a new process group here (rules: module docstring).

    ``groups`` is the registry of its live groups (a fresh one by default); :meth:`kill_all`
    SIGKILLs them all. ``Launch.limits`` is accepted and not applied: there are none yet.
    """

    def __init__(self, groups: ProcessGroups | None = None) -> None:
        self.groups = groups if groups is not None else ProcessGroups()

    def start(self, launch: Launch) -> LocalProcess:
        """Fork and exec now (a few hundred microseconds on the loop; see :func:`spawn`)."""
        child = spawn(launch.argv, launch.env, launch.cwd, piped_stdin=launch.stdin is not None)
        self.groups.add(child.pid)  # start_new_session=True: the group id is the leader's pid
        return LocalProcess(child, launch, self.groups)

    def kill_all(self) -> None:
        self.groups.kill_all()


class LocalProcess:
    """One started child and its group, as :class:`LocalRunner` hands it out."""

    __slots__ = ("_child", "_groups", "_launch")

    def __init__(self, child: Child, launch: Launch, groups: ProcessGroups) -> None:
        self._child = child
        self._launch = launch
        self._groups = groups

    async def wait(self) -> ProcessResult:
        child = self._child
        launch = self._launch
        out, err = await communicate(
            child.stdin, child.stdout, child.stderr, launch.stdin, launch.output_cap, launch.output
        )
        returncode = await child.wait()
        truncated = out.truncated or err.truncated
        return ProcessResult(returncode, out.text(), err.text(), truncated, child.pid)

    async def stop(self, grace: float) -> None:
        """Stop the child's whole process group: SIGTERM, up to ``grace`` s, SIGKILL, reap.

        Called inside a shielded scope. The SIGKILL goes to the group whether or not the leader
        exited within its grace: it ends a leader that ignored SIGTERM and also stray
        grandchildren that outlived it. It is sent while the leader is still unreaped (a zombie
        at worst), so the group id cannot have been reused by an unrelated process meanwhile. A
        group member cannot fork past a pending group SIGKILL, so no new stray escapes it.
        """
        child = self._child
        if not self._groups.killing:
            _killpg(child.pid, signal.SIGTERM)
            with trio.move_on_after(grace):
                await child.wait_exited()
        _killpg(child.pid, signal.SIGKILL)
        await child.wait()

    def close(self) -> None:
        self._child.close()
        self._groups.discard(self._child.pid)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
