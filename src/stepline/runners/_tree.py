"""A step's whole process tree: held, limited and stopped, with what this machine offers.

:class:`Containment` is what one runner uses, chosen once, strongest first:

1. **a cgroup per step** (:mod:`~stepline.runners._cgroup`; as root where a cgroupfs is
   mounted): every process the step starts stays in it, whatever it does (``setsid``,
   ``setpgid``, a double fork); memory and process limits apply to the whole tree; an OOM kill
   is counted there, so it is told from a kill. By default only steps with a ``memory`` or
   ``processes`` limit get one: those limits need it, and a cgroup costs every step two
   migrations of the starting thread, about 0.2 ms of the event loop on cgroup v1 here (NOTES.md,
   Containment). ``STEPLINE_CGROUPS=1`` gives every step one, ``STEPLINE_CGROUPS=0`` none.
2. **the step's process group and an environment marker** (``STEPLINE_TREE=RUNNER.STEP``), which
   every descendant inherits and a scan of ``/proc`` finds (as Jenkins finds a build's
   processes): every other step. A process that clears its environment *and* leaves the process
   group is out of reach there. Limits are rlimits.

The marker is set in both: with a cgroup v2 a process joins its group a few microseconds after
it started, and the marker catches what it forked before (v1 has no such window).

In both, stepline is a child subreaper (``PR_SET_CHILD_SUBREAPER``): an escaper whose parent
exits comes back to stepline instead of init, so it is still below stepline (and reaped by it).
And a guardian process (:mod:`~stepline.runners._guard`) kills every step's tree if stepline
itself dies, SIGKILL included: it waits on a pipe only stepline holds. Should the guardian die
too, the next stepline stops what is left before its first step (:mod:`._leftovers`).

A step's tree is stopped when the step ends for any reason: a stop (cancel, timeout, shutdown)
sends SIGTERM to all of it, waits up to the grace, then SIGKILLs what is left until nothing is;
a normal end does the same to whatever the main process left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import Final

import trio

from ..spec._limits import NO_LIMITS, Limits
from ._cgroup import Cgroups, StepGroup
from ._leftovers import sweep_leftovers
from ._proc import environments
from ._rlimits import apply_rlimits, needs_cgroup, prlimit_prefix, rlimit_hint

__all__ = ["Containment", "StepTree", "live_leaders", "own_children", "shared_containment"]

log = logging.getLogger("stepline")

_PR_SET_CHILD_SUBREAPER: Final = 36
_RUNNERS = itertools.count(1)
_LEADERS: set[int] = set()  # every runner's live step leaders (not to be reaped as orphans)
_ORPHANS: set[int] = set()  # processes killed in a sweep, to be reaped once they are zombies
_HELPERS: set[int] = set()  # the guardians: children of ours that are not orphans
_GUARD: Final = os.path.join(os.path.dirname(__file__), "_guard.py")
_SHARED: list[Containment] = []
_SURELY_WHOLE: Final = 3072  # a /proc read this short was the whole file (_children)


def shared_containment() -> Containment:
    """The process's containment, made on first use: one guardian and one cgroup directory
    per stepline process, whatever number of runners it has."""
    if not _SHARED:
        _SHARED.append(Containment())
    return _SHARED[0]


def live_leaders() -> set[int]:
    """The pids of the step processes every runner here is running (the process-wide set)."""
    return _LEADERS


class Containment:
    """One runner's way of holding its steps' trees (module docstring), made on first use."""

    def __init__(self, *, cgroups: bool = True) -> None:
        sweep_leftovers()  # before this process's first step: nothing runs beside a rerun
        setting = os.environ.get("STEPLINE_CGROUPS", "")
        self.cgroups = Cgroups.open() if cgroups and setting != "0" else None
        self.every_step = setting == "1"  # else only steps whose limits need a cgroup
        self.marker = f"{os.getpid()}-{next(_RUNNERS)}"
        self.subreaper = _become_subreaper()
        self._steps = itertools.count(1)
        self._guard = _start_guardian(self.marker, self.cgroups)
        if self._guard is not None:
            _HELPERS.add(self._guard.pid)
            weakref.finalize(self, _stop_guardian, self._guard)

    @property
    def description(self) -> str:
        """What holds the trees here, for ``stepline serve`` logs and the docs' table."""
        how = "process groups and an env marker"
        if self.cgroups is not None:
            which = "every step" if self.every_step else "steps with memory/processes limits"
            how = f"{how}; {self.cgroups.description} for {which}"
        extras = [x for x, on in (("subreaper", self.subreaper), ("guardian", self._guard)) if on]
        return ", ".join([how, *extras])

    def tree(self, limits: Limits) -> StepTree:
        """A new step's tree, before its process starts (raises ``OSError``)."""
        cgroups, group = self.cgroups, None
        if cgroups is not None and (self.every_step or needs_cgroup(limits)):
            group = cgroups.group(limits)
        return StepTree(self, limits, group, f"{self.marker}.{next(self._steps)}")

    def close(self) -> None:
        """Stop the guardian (nothing is left to guard) and remove the runner's cgroups."""
        if self._guard is not None:
            _stop_guardian(self._guard)
        if self.cgroups is not None:
            self.cgroups.close()


class StepTree:
    """The processes of one step: started by :meth:`adopt`, ended by :meth:`end`."""

    __slots__ = ("_containment", "_entered", "group", "leader", "limits", "marker")

    def __init__(
        self, containment: Containment, limits: Limits, group: StepGroup | None, marker: str
    ) -> None:
        self._containment = containment
        self.limits = limits
        self.group = group
        self.marker = marker
        self.leader = 0
        self._entered = False  # the process was started inside the group (cgroup v1)

    def env(self, env: Mapping[str, str] | None) -> Mapping[str, str]:
        """The step's environment additions: its marker."""
        return {**(env or {}), "STEPLINE_TREE": self.marker}

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Around the start of the step's process: where the cgroup allows it, the starting
        thread sits in the step's group meanwhile, so the process is born inside
        (:meth:`~stepline.runners._cgroup.StepGroup.entered`)."""
        group = self.group
        if group is None or not group.enterable:
            yield
            return
        with group.entered():
            yield
        self._entered = True

    def launcher(self) -> tuple[str, ...]:
        """The command that starts the step's program with its rlimits already set (empty:
        none to set, or no ``prlimit`` here): :func:`._rlimits.prlimit_prefix`."""
        return prlimit_prefix(self.limits, self.group)

    def adopt(self, pid: int) -> None:
        """The step's process ``pid`` was just started: hold it, and anything it forked already.

        It joins the step's cgroup, if it was not born inside, a few microseconds after it
        was started; whatever it forked before that is found through
        ``/proc/PID/task/*/children`` and treated alike. Its rlimits were set before its first
        instruction by :meth:`launcher` where ``prlimit`` exists; they are set here again, which
        is where they are set at all on a machine without it (:mod:`._rlimits`).
        """
        self.leader = pid
        _LEADERS.add(pid)
        join = self.group is not None and not self._entered
        if not join and self.limits is NO_LIMITS:
            return
        pending, seen = [pid], set()
        while pending:
            current = pending.pop()
            seen.add(current)
            if join:
                assert self.group is not None
                self.group.join(current)
            apply_rlimits(current, self.limits, self.group)
            pending.extend(p for p in _children(current) if p not in seen)

    def members(self, *, thorough: bool) -> list[int]:
        """The tree's live processes besides the leader: the cgroup's, and, if ``thorough`` or
        the process group or an orphan hints at more, the marker's."""
        found = self.group.procs() if self.group is not None else []
        if thorough or _group_alive(self.leader) or _adopted():
            found += _marked(self.marker)
        return [p for p in found if p != self.leader]

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole tree: the leader's group, the cgroup, every marked one."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.leader, sig)
        if self.group is not None:
            _ORPHANS.update(p for p in self.group.signal(sig) if p != self.leader)
        for pid in _marked(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if pid != self.leader:
                _ORPHANS.add(pid)

    async def end(self, grace: float, *, thorough: bool = False) -> None:
        """Stop what is left of the tree: SIGTERM, up to ``grace`` s, then SIGKILL until none.

        The leader is not waited for here (its caller reaps it); the rest is. Called on every
        step's end, so the common case of a normal end, nothing left, costs one read of
        stepline's children and one ``killpg`` (and a read of ``cgroup.procs`` with a cgroup).
        """
        if thorough:
            if not (self.members(thorough=True) or _group_alive(self.leader)):
                _reap_orphans()
                return
        elif self.ended_quietly():
            return
        if grace > 0:
            self.signal(signal.SIGTERM)
            with trio.move_on_after(grace):
                await self._gone()
        delay = 0.001
        while self.members(thorough=True) or _group_alive(self.leader):
            self.signal(signal.SIGKILL)
            await trio.sleep(delay)
            delay = min(2 * delay, 0.02)
        _reap_orphans()

    def ended_quietly(self) -> bool:
        """:meth:`end`'s common case, without awaiting: True when nothing of a normal end's
        tree is left (orphans then reaped); False: :meth:`end` must stop what is."""
        if self._maybe_left():
            return False
        _reap_orphans()
        return True

    def _maybe_left(self) -> bool:
        """The cheap first look of a normal end, whose common case is that nothing is left:
        a member in the cgroup, an orphan come back to stepline, or a live process group."""
        if self.group is not None and any(p != self.leader for p in self.group.procs()):
            return True
        return _adopted() or _signalable(self.leader)

    async def _gone(self) -> None:
        delay = 0.001
        while self.members(thorough=True) or _group_alive(self.leader):
            await trio.sleep(delay)
            delay = min(2 * delay, 0.05)

    def ending(
        self, returncode: int, stderr: str, output_exceeded: bool
    ) -> tuple[str | None, bool]:
        """The limit the step ran into, if any (None: it ended on its own terms), and whether the
        OOM killer killed a process of it for memory that ran out elsewhere (the machine, a
        cgroup above stepline's): known only for a step with a memory cgroup of its own."""
        oom = self.group.oom_kill() if self.group is not None else None
        if oom == "limit":
            return "memory", False
        return self._limit(returncode, stderr, output_exceeded), oom == "other"

    def _limit(self, returncode: int, stderr: str, output_exceeded: bool) -> str | None:
        limits, group = self.limits, self.group
        if output_exceeded and limits.output is not None:
            return "output"
        if limits is NO_LIMITS or returncode == 0:
            return None
        if limits.cpu is not None and returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            return "cpu"
        if group is not None and group.processes_maxed():
            return "processes"
        return rlimit_hint(limits, stderr, group)

    def release(self) -> None:
        """The step is over: forget its leader, give its cgroup back."""
        _LEADERS.discard(self.leader)
        if self.group is not None:
            cgroups = self._containment.cgroups
            assert cgroups is not None
            cgroups.give_back(self.group)
            self.group = None


# -- process-wide helpers -----------------------------------------------------------------------


def _become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux 3.4)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _start_guardian(marker: str, cgroups: Cgroups | None) -> subprocess.Popen[bytes] | None:
    """Start the guardian (module docstring); None if it cannot be started."""
    roots = cgroups.roots if cgroups is not None else []
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", _GUARD, marker, *roots],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env={},  # nothing of stepline's: it is not one of the steps' processes
        )
    except OSError as exc:
        log.warning("no guardian for run steps (a crash may leave processes): %s", exc)
        return None


def _stop_guardian(guard: subprocess.Popen[bytes]) -> None:
    """Close its pipe: it sweeps (nothing, by now), removes the directories and exits; it is
    reaped if it does so within half a second (it takes milliseconds), else left to init."""
    if guard.stdin is not None and not guard.stdin.closed:
        guard.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        guard.wait(0.5)


def _children(pid: int) -> list[int]:
    """The children of ``pid``'s main thread. Read with ``os.read``: a text ``open`` builds
    three file objects and asks for the locale's encoding (NOTES.md, Performance)."""
    try:
        fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        return _read_pids(fd)
    finally:
        os.close(fd)


_OWN: list[int] = []  # the kept-open children file of this process's main thread


def own_children() -> list[int]:
    """The children of this process's main thread, where orphans come back to a subreaper.

    Every step's end asks (:func:`_adopted`), and opening the ``/proc`` file (a walk of its
    path) cost about ten times reading it (NOTES.md, Performance), so the file is opened once
    and read from its start each time: a ``/proc`` sequence file read at offset 0 is generated
    afresh. A forked child drops it (it names the parent's thread) and opens its own.
    """
    if not _OWN:
        pid = os.getpid()
        try:
            _OWN.append(os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            return []
    return _read_pids(_OWN[0])


def _forget_own_children() -> None:
    if _OWN:
        os.close(_OWN.pop())


os.register_at_fork(after_in_child=_forget_own_children)


def _read_pids(fd: int) -> list[int]:
    """The pids in a ``/proc`` children file, read from its start. A sequence file fills a read
    until it runs out of records or its page-sized buffer is full, so a read that came back
    well short of a page was the whole file: the common case, one read, none to see EOF."""
    try:
        data = os.pread(fd, 65536, 0)
        if len(data) >= _SURELY_WHOLE:
            while chunk := os.pread(fd, 65536, len(data)):
                data += chunk
        return [int(p) for p in data.split()]
    except (OSError, ValueError):
        return []


def _adopted() -> bool:
    """Does stepline have a child it did not start (an orphan come back to the subreaper)?"""
    return any(p not in _LEADERS and p not in _HELPERS for p in own_children())


def _group_alive(pgid: int) -> bool:
    """Has process group ``pgid`` a live member? Zombies of it that came back to us (orphans of
    the subreaper) are reaped first: a zombie still counts as a member for ``killpg``."""
    if pgid <= 0:
        return False
    _reap_zombies_of(pgid)
    return _signalable(pgid)


def _signalable(pgid: int) -> bool:
    """Has process group ``pgid`` a member (a zombie counts)?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _marked(marker: str) -> list[int]:
    """Processes whose environment carries ``STEPLINE_TREE=marker`` (a scan of ``/proc``)."""
    needle = f"STEPLINE_TREE={marker}\0".encode()
    return [
        pid for pid, environ in environments() if needle in environ or environ.endswith(needle[:-1])
    ]


def _reap_zombies_of(pgid: int) -> None:
    """Reap our zombie children of group ``pgid`` (not its leader: its own ``wait`` reaps it)."""
    for pid in own_children():
        if pid in _LEADERS or pid in _HELPERS:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[2]) == pgid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _reap_orphans() -> None:
    """Reap the processes a sweep killed that came back to us; not ours or not dead yet: later."""
    for pid in list(_ORPHANS):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            _ORPHANS.discard(pid)  # not our child (it had a living parent): its parent reaps it
            continue
        if done:
            _ORPHANS.discard(pid)
