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
* Nothing outlives its step: each step's whole tree is held by :mod:`._tree` (a cgroup per step
  where one can be made, else its process group and an environment marker; stepline a
  subreaper; a guardian for when stepline dies). A stop ends all of it, ``setsid`` escapers
  included; a normal end does the same to what the main process left running.
* ``Launch.limits`` are applied to the tree (:mod:`._tree`): memory and processes by the cgroup
  where there is one, else by rlimits; cpu and files by rlimits. ``limits.output`` replaces the
  cap, and output beyond it fails the step.
* A :class:`ProcessGroups` registry holds the live groups so that a hard stop (a second SIGINT)
  can SIGKILL them all at once, whatever their grace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from collections.abc import Iterator, Mapping

import trio

from ..spec._limits import NO_LIMITS
from ._base import Launch, ProcessResult, ProcessStartError
from ._capture import communicate
from ._early import ended_soon
from ._pool import BriefTicket, run_on_pool, submit_brief
from ._spawn import Child, spawn
from ._threads import Done, Interrupt, call_on_spawner, run_on_spawner
from ._tree import Containment, StepTree, shared_containment

__all__ = ["LocalProcess", "LocalRunner", "ProcessGroups"]


class ProcessGroups:
    """Registry of live child process groups, so a hard stop can SIGKILL them all at once.

    :class:`LocalRunner` adds a group when its child starts and removes it once the child is
    reaped. After :meth:`kill_all` the registry stays "killing": a group added later (a child
    that was starting at that very moment) is SIGKILLed on arrival, and stops skip the grace.
    """

    def __init__(self) -> None:
        self._pgids: set[int] = set()
        self._trees: dict[int, StepTree] = {}
        self.killing = False

    def add(self, pgid: int, tree: StepTree | None = None) -> None:
        """Register a live group (and its step's tree); SIGKILL it at once if :meth:`kill_all`
        was already called."""
        self._pgids.add(pgid)
        if tree is not None:
            self._trees[pgid] = tree
        if self.killing:
            self._kill(pgid)

    def discard(self, pgid: int) -> None:
        """Forget a group (its leader was reaped); unknown ids are ignored."""
        self._pgids.discard(pgid)
        self._trees.pop(pgid, None)

    def _kill(self, pgid: int) -> None:
        _killpg(pgid, signal.SIGKILL)
        tree = self._trees.get(pgid)
        if tree is not None:
            tree.signal(signal.SIGKILL)

    def kill_all(self) -> None:
        """SIGKILL every registered group now.

        Synchronous, so a signal handler task can call it without awaiting. A process that is
        waiting out its grace then finishes promptly: its child dies, so its wait returns.
        """
        self.killing = True
        for pgid in list(self._pgids):
            self._kill(pgid)

    def __len__(self) -> int:
        return len(self._pgids)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._pgids))


class LocalRunner:
    """Starts each process as the leader of a new process group here (rules: module docstring).

    ``groups`` is the registry of its live groups (a fresh one by default); :meth:`kill_all`
    SIGKILLs them all. ``containment`` holds the steps' trees (:mod:`._tree`; by default the
    process's shared one, made on first start).
    """

    def __init__(
        self, groups: ProcessGroups | None = None, containment: Containment | None = None
    ) -> None:
        self.groups = groups if groups is not None else ProcessGroups()
        self._containment = containment

    @property
    def containment(self) -> Containment:
        if self._containment is None:
            self._containment = shared_containment()
        return self._containment

    def start(self, launch: Launch) -> LocalProcess:
        """Prepare the step's tree now; the fork and exec happen in :meth:`LocalProcess.wait`,
        on a spawner thread (:mod:`._threads`)."""
        if launch.runner != "local":
            raise ProcessStartError(f"the {launch.runner} runner is not available here")
        try:
            tree = self.containment.tree(launch.limits)
        except OSError as exc:
            raise ProcessStartError(f"cannot make the step's cgroup: {exc.strerror}") from exc
        try:
            env = tree.env(launch.env)
        except BaseException:
            tree.release()
            raise
        return LocalProcess(launch, env, self.groups, tree)

    def kill_all(self) -> None:
        self.groups.kill_all()


class LocalProcess:
    """One child and its group, as :class:`LocalRunner` hands it out; started by :meth:`wait`.

    Why the fork and exec run on a thread: a vfork returns only once the child has exec'd, and
    on the event loop that held every other job's events for as long, a slow exec (a big
    binary, a cold disk) too, and made spawns serial. ``_posixsubprocess`` releases the GIL
    meanwhile, so up to :data:`~._threads.SPAWNERS` spawns overlap and the loop goes on
    (NOTES.md, Performance, for what each way measured). The thread is never abandoned: a
    cancel waits for the spawn to end, so there is no moment at which a started child is not
    ours to stop. A short step with nothing to feed, no limits and no cgroup may end during the
    spawner's brief wait after the start (:mod:`._early`); it then reaches :meth:`wait` with
    nothing left to capture.
    """

    __slots__ = (
        "_child",
        "_closed",
        "_ended",
        "_env",
        "_grace",
        "_groups",
        "_hurried",
        "_interrupt",
        "_launch",
        "_returncode",
        "_tree",
    )

    def __init__(
        self,
        launch: Launch,
        env: Mapping[str, str] | None,
        groups: ProcessGroups,
        tree: StepTree,
    ) -> None:
        self._child: Child | None = None
        self._launch = launch
        self._env = env
        self._groups = groups
        self._tree = tree
        self._grace: trio.CancelScope | None = None  # a stop's wait for SIGTERM to work
        self._hurried = False
        # Set when the child was started without a task (spawn_soon): its end on the thread,
        # how to cut that short, and its exit status once a silent end reaped it.
        self._ended = False
        self._interrupt: Interrupt | BriefTicket | None = None
        self._closed = False  # end_now told the sink, closed the pipes and tried to reap
        self._returncode: int | None = None

    @property
    def brief(self) -> bool:
        """Whether its spawner may wait for its end (:mod:`._early`): nothing to feed, no
        limits to set and no cgroup to join right after the start."""
        launch = self._launch
        return launch.stdin is None and self._tree.group is None and launch.limits is NO_LIMITS

    async def _spawn(self) -> tuple[Child, bool]:
        """Start the child on the pool of C threads (a brief step, where it is built) or a
        spawner thread; also whether it already ended there, silently (:mod:`._early`: only a
        step the loop need not attend to right after its start)."""
        launch = self._launch
        interrupt = Interrupt() if self.brief else None
        call = functools.partial(_spawn_in, self._tree, launch, self._env, interrupt)
        started = None
        if interrupt is not None:
            started = await run_on_pool(launch.argv, self._env, launch.cwd, interrupt, call)
        if started is None:
            started = await run_on_spawner(call, interrupt)
        child, ended = started
        self.spawned(child, ended)
        return child, ended

    def spawn_soon(self, done: Done) -> None:
        """Start the child with no task waiting for it, on the pool of C threads where it is
        built (:mod:`._pool`), else on a spawner thread: ``done`` gets the outcome on the event
        loop, ``(child, ended)`` or the ``ProcessStartError``, and hands a child to
        :meth:`spawned` (the run lane, :mod:`stepline.engine._run_lane`). Only for a launch
        with nothing to feed and no limits, which may wait for its end on the thread;
        :meth:`interrupt` cuts that wait short."""
        interrupt = Interrupt()
        launch = self._launch
        fallback = functools.partial(_spawn_in, self._tree, launch, self._env, interrupt)
        ticket = submit_brief(launch.argv, self._env, launch.cwd, interrupt, done, fallback)
        if ticket is None:  # the pool of C threads cannot start it: a spawner thread does
            call_on_spawner(fallback, done)
        self._interrupt = interrupt if ticket is None else ticket

    def interrupt(self) -> None:
        """A cancel: end the thread's wait for the child's end (:meth:`spawn_soon`) now."""
        if self._interrupt is not None:
            self._interrupt.request()

    def spawned(self, child: Child, ended: bool) -> None:
        """Hold a child just started (its tree, the registry of groups); :meth:`wait` goes on
        from here if it was started by :meth:`spawn_soon`."""
        self._child, self._ended = child, ended
        self._tree.adopt(child.pid)
        self._groups.add(child.pid, self._tree)  # a new session: the group id is the leader's pid

    def end_now(self) -> ProcessResult | None:
        """For a child started by :meth:`spawn_soon` that ended silently on its thread: what
        :meth:`wait` returns, synchronously, when nothing of its tree is left (the common
        case). None: something is, and :meth:`wait` must end it."""
        child = self._child
        assert child is not None
        assert self._ended
        self._closed = True
        self._returncode = returncode = self._close_silent(child)
        if returncode is None or self._groups.killing or not self._tree.ended_quietly():
            return None
        limit, oom = self._tree.ending(returncode, "", False)
        return ProcessResult(returncode, "", "", False, child.pid, limit, True, oom)

    async def wait(self) -> ProcessResult:
        if self._child is None:
            child, ended = await self._spawn()
        else:  # started by spawn_soon
            child, ended = self._child, self._ended
        launch = self._launch
        if ended:
            return await self._silent_end(child)
        out, err = await communicate(
            child.stdin,
            child.stdout,
            child.stderr,
            launch.stdin,
            launch.output_cap,
            launch.output,
        )
        returncode = await child.wait()
        await self._tree.end(0 if self._groups.killing else launch.grace)
        truncated = out.truncated or err.truncated
        stderr = err.text()
        limit, oom = self._tree.ending(returncode, stderr, truncated)
        return ProcessResult(returncode, out.text(), stderr, truncated, child.pid, limit, True, oom)

    async def _silent_end(self, child: Child) -> ProcessResult:
        """:meth:`wait` for a child that ended silently on its spawner thread (:mod:`._early`):
        what a capture of two empty pipes gives (both streams' ends told to the sink, empty
        text, nothing cut), without making the captures. Most ``run`` steps of a busy server
        end here (NOTES.md, Performance)."""
        launch = self._launch
        returncode = self._returncode if self._closed else self._close_silent(child)
        if returncode is None:
            returncode = await child.wait()
        await self._tree.end(0 if self._groups.killing else launch.grace)
        limit, oom = self._tree.ending(returncode, "", False)
        return ProcessResult(returncode, "", "", False, child.pid, limit, True, oom)

    def _close_silent(self, child: Child) -> int | None:
        """A silent end's first part: both streams' ends told to the sink, the pipes closed,
        the child reaped (it exited: the thread saw it); its exit status (None: not yet)."""
        sink = self._launch.output
        if sink is not None:
            sink.eof("stdout")
            sink.eof("stderr")
        child.stdout.close()
        child.stderr.close()
        return child.poll()

    async def stop(self, grace: float) -> None:
        """Stop the child's whole tree: SIGTERM, up to ``grace`` s, SIGKILL, reap.

        Called inside a shielded scope. The SIGKILL goes to the group whether or not the leader
        exited within its grace: it ends a leader that ignored SIGTERM and also stray
        grandchildren that outlived it. It is sent while the leader is still unreaped (a zombie
        at worst), so the group id cannot have been reused by an unrelated process meanwhile. A
        group member cannot fork past a pending group SIGKILL, so no new stray escapes it.
        """
        child, tree = self._child, self._tree
        if child is None:
            return  # it never started (cancelled before its spawn, or the spawn failed)
        deadline = trio.current_time() + grace
        if not (self._groups.killing or self._hurried):
            tree.signal(signal.SIGTERM)
            with trio.move_on_at(deadline) as self._grace:
                await child.wait_exited()
            self._grace = None
        _killpg(child.pid, signal.SIGKILL)
        await child.wait()
        # the rest of the tree (escapers too) gets what is left of the grace, then SIGKILL
        forced = self._groups.killing or self._hurried
        rest = 0.0 if forced else max(0.0, deadline - trio.current_time())
        await tree.end(rest, thorough=True)

    def hurry(self) -> None:
        """SIGKILL comes now: the grace being waited out ends (the stop sends it)."""
        self._hurried = True
        if self._grace is not None:
            self._grace.cancel()

    def close(self) -> None:
        if self._child is not None:
            self._child.close()
            self._groups.discard(self._child.pid)
        self._tree.release()


def _spawn_in(
    tree: StepTree, launch: Launch, env: Mapping[str, str] | None, interrupt: Interrupt | None
) -> tuple[Child, bool]:
    """On a spawner thread: fork and exec, the thread inside the step's cgroup meanwhile where
    the cgroup allows it (:meth:`StepTree.spawning`), so the child is born inside; then, given
    an ``interrupt``, a short wait for the child's silent end (:func:`._early.ended_soon`)."""
    piped_stdin = launch.stdin is not None
    if tree.group is None and launch.limits is NO_LIMITS:  # the common case: nothing to set
        child = spawn(launch.argv, env, launch.cwd, piped_stdin=piped_stdin)
    else:
        launcher = tree.launcher()
        try:
            with tree.spawning():
                child = spawn(
                    launch.argv, env, launch.cwd, piped_stdin=piped_stdin, launcher=launcher
                )
        except OSError as exc:  # stepping into the step's cgroup (spawn's errors are typed)
            raise ProcessStartError(f"cannot use the step's cgroup: {exc.strerror}") from exc
    if interrupt is None:
        return child, False
    try:
        return child, ended_soon(child, interrupt)
    except OSError:  # no descriptor for the wake-up pipe, say: the loop captures as ever
        return child, False


def _killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
