"""Control groups: one per ``run`` step, so its whole process tree can be found, limited, killed.

A process cannot leave its cgroup by ``setsid``, ``setpgid`` or a double fork, so a step's cgroup
holds every process the step started, however they tried to get away. :class:`Cgroups` finds
what this machine offers (:func:`detect`), makes one directory per runner (``stepline-PID-N``)
under stepline's own cgroup in each hierarchy it uses, and one child per step under that.

* **cgroup v2** (one hierarchy): tracking and ``cgroup.kill`` always; ``memory.max`` and
  ``pids.max`` when those controllers can be enabled below stepline's cgroup (a non-root cgroup
  that holds processes cannot enable them: the "no internal processes" rule).
* **cgroup v1** (one hierarchy per controller, as on these machines): ``pids`` tracks the tree
  (and limits it), ``memory`` limits it; where there is no ``pids`` hierarchy, a v2 hierarchy
  mounted beside (``/sys/fs/cgroup/unified``) or the ``freezer`` tracks it.

How a step's process gets into its cgroup without a window in which it could fork outside:
Python cannot start a child inside a cgroup (``clone3`` with ``CLONE_INTO_CGROUP``), and a
``preexec_fn`` forks the whole interpreter (3 ms against 0.1 ms; NOTES.md, Containment).

* **v1** lets a single thread change cgroups (its ``tasks`` file), and a child is born in the
  cgroups of the thread that forks it. So the starting thread steps into the step's group for the
  fork (:meth:`StepGroup.entered`) and back out: the child, and all it ever forks, is inside from
  its first instruction. While the thread is in, it counts against ``pids.max``, so the limit is
  one higher until the thread has left.
* **v2** does not let threads of one process sit in different (non-threaded) cgroups, so the
  process joins right after it started (:meth:`StepGroup.join`) and the caller joins whatever it
  forked before that; an escaper quicker than that is caught by the step's environment marker
  (:mod:`._tree`).

Steps without memory or process limits reuse empty cgroups (a pool, as workspaces do): making and
removing one costs about 80 µs per hierarchy, joining one 25 µs.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Literal

import attrs

from ..spec._limits import Limits

__all__ = ["Cgroups", "Hierarchy", "OomKill", "StepGroup", "detect"]

log = logging.getLogger("stepline")

_RUNNERS = itertools.count(1)
_V1_COUNTERS = ("memory.", "memory.memsw.")  # memory, and memory with swap
_LARGEST_CHARGE = 2 << 20  # a transparent huge page: usage stops at most this far below a limit

OomKill = Literal["limit", "other"]
"""Whose memory ran out when the OOM killer killed a step's process (:meth:`StepGroup.oom_kill`)."""
_POOL = 16  # empty unlimited step groups kept for reuse


@attrs.frozen
class Hierarchy:
    """One mounted cgroup hierarchy: its version, stepline's own cgroup directory in it, and
    the controllers it carries (v1: the mount's; v2: those listed in ``cgroup.controllers``)."""

    version: int
    base: str
    controllers: frozenset[str]


def detect(
    mountinfo: str = "/proc/self/mountinfo", own: str = "/proc/self/cgroup"
) -> list[Hierarchy]:
    """The cgroup hierarchies mounted here, each with stepline's own directory in it."""
    try:
        with open(own) as f:
            paths = _own_paths(f.read())
        with open(mountinfo) as f:
            mounts = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in mounts:
        hierarchy = _hierarchy(line, paths)
        if hierarchy is not None:
            found.append(hierarchy)
    return found


def _own_paths(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controllers (v1: "memory"; v2: ""): path}."""
    paths = {}
    for line in text.splitlines():
        _id, controllers, path = line.split(":", 2)
        paths[controllers] = path
    return paths


def _hierarchy(line: str, paths: dict[str, str]) -> Hierarchy | None:
    fields = line.split()
    if "-" not in fields:
        return None
    dash = fields.index("-")
    fstype, options = fields[dash + 1], fields[dash + 3].split(",")
    root, mountpoint = fields[3], fields[4]
    if fstype == "cgroup2":
        own = paths.get("")
        controllers = frozenset(_read(os.path.join(mountpoint, "cgroup.controllers")).split())
        version = 2
    elif fstype == "cgroup":
        names = frozenset(o for o in options if o in _V1_CONTROLLERS)
        own = next((p for k, p in paths.items() if k and frozenset(k.split(",")) == names), None)
        controllers, version = names, 1
    else:
        return None
    if own is None or (not controllers and version == 1):
        return None
    relative = own[len(root) :] if root != "/" and own.startswith(root) else own
    return Hierarchy(version, os.path.normpath(mountpoint + "/" + relative), controllers)


_V1_CONTROLLERS = frozenset(
    ("pids", "memory", "freezer", "cpu", "cpuacct", "cpuset", "blkio", "devices", "net_cls")
)


@attrs.define
class _Dirs:
    """Where a runner keeps its step groups: the runner's directory in each hierarchy used."""

    track: str  # every step's group; its cgroup.procs is the step's tree
    memory: str | None  # memory limits (the same directory as track on v2)
    pids: str | None  # process limits
    version: int  # of the tracking hierarchy: 2 has cgroup.kill


class Cgroups:
    """One runner's cgroups: made by :meth:`open`, a :class:`StepGroup` per step."""

    def __init__(self, dirs: _Dirs, description: str) -> None:
        self._dirs = dirs
        self.description = description  # "cgroup v1 (pids, memory)" and the like
        self._free: list[StepGroup] = []
        self._names = itertools.count(1)

    @classmethod
    def open(cls) -> Cgroups | None:
        """This runner's cgroups, or None where none can be made (not root, no cgroupfs)."""
        hierarchies = detect()
        name = f"stepline-{os.getpid()}-{next(_RUNNERS)}"
        v2 = next((h for h in hierarchies if h.version == 2), None)
        v1 = {c: h for h in hierarchies if h.version == 1 for c in h.controllers}
        made: list[str] = []
        try:
            if v2 is not None and {"memory", "pids"} <= _enable(v2.base):
                track = _make(v2.base, name, made)
                _enable(track)
                dirs = _Dirs(track, track, track, 2)
                return cls(dirs, "cgroup v2 (memory, pids)")
            return cls._open_v1(v1, v2, name, made)
        except OSError as exc:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            log.debug("no cgroups for run steps: %s", exc)
            return None

    @classmethod
    def _open_v1(
        cls, v1: dict[str, Hierarchy], v2: Hierarchy | None, name: str, made: list[str]
    ) -> Cgroups | None:
        pids = _make(v1["pids"].base, name, made) if "pids" in v1 else None
        memory = _make(v1["memory"].base, name, made) if "memory" in v1 else None
        if pids is not None:
            track, version, how = pids, 1, "pids"
        elif v2 is not None:
            track, version, how = _make(v2.base, name, made), 2, "v2 tracking"
        elif "freezer" in v1:
            track, version, how = _make(v1["freezer"].base, name, made), 1, "freezer"
        else:
            return None
        used = ", ".join([how] + (["memory"] if memory else []))
        return cls(_Dirs(track, memory, pids, version), f"cgroup v1 ({used})")

    @property
    def roots(self) -> list[str]:
        """The runner's directories (what the guardian empties and removes if stepline dies)."""
        dirs = self._dirs
        return sorted({d for d in (dirs.track, dirs.memory, dirs.pids) if d is not None})

    @property
    def limits_memory(self) -> bool:
        return self._dirs.memory is not None

    @property
    def limits_processes(self) -> bool:
        return self._dirs.pids is not None

    def group(self, limits: Limits) -> StepGroup:
        """A cgroup for one step, its limits written (an empty pooled one when it has none)."""
        dirs = self._dirs
        memory = limits.memory if dirs.memory is not None else None
        processes = limits.processes if dirs.pids is not None else None
        if memory is None and processes is None and self._free:
            return self._free.pop()
        name = f"s{next(self._names)}"
        made: list[str] = []
        track = _make(dirs.track, name, made)
        group = StepGroup(track, dirs.version, pooled=memory is None and processes is None)
        try:
            if dirs.memory is not None:  # limited or not: the kernel counts its OOM kills there
                same = dirs.memory == dirs.track
                group.memory = track if same else _make(dirs.memory, name, made)
            if memory is not None:
                assert group.memory is not None
                _limit_memory(group.memory, memory, dirs.version)
                group.memory_limited = True
            if processes is not None:
                assert dirs.pids is not None
                same = dirs.pids == dirs.track
                group.pids = track if same else _make(dirs.pids, name, made)
                group.processes = processes
                group.limit_processes(spare=group.version == 1)
        except OSError:
            group.remove()
            raise
        return group

    def give_back(self, group: StepGroup) -> None:
        """Done with ``group`` (its processes are gone): pool it, or remove it."""
        # (an OOM kill stays counted in the group for good: such a group is not reused)
        if group.pooled and len(self._free) < _POOL and group.empty() and not group.oom_kill():
            self._free.append(group)
            return
        group.remove()

    def close(self) -> None:
        """Remove the pooled groups and the runner's directories (they must be empty)."""
        free, self._free = self._free, []
        for group in free:
            group.remove()
        for path in self.roots:
            with contextlib.suppress(OSError):
                os.rmdir(path)


class StepGroup:
    """One step's cgroup: its tracking directory, and memory/pids directories when limited."""

    __slots__ = ("memory", "memory_limited", "pids", "pooled", "processes", "track", "version")

    def __init__(self, track: str, version: int, *, pooled: bool) -> None:
        self.track = track
        self.version = version
        self.pooled = pooled
        self.memory: str | None = None  # where its memory is counted (and limited, if set)
        self.memory_limited = False  # the step's own `memory` limit is written there
        self.pids: str | None = None
        self.processes: int | None = None  # the pids limit, once written

    @property
    def enterable(self) -> bool:
        """Whether a thread may step in to fork the step's process inside (v1 only)."""
        return self.version == 1

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread sits in this group (every hierarchy) for the body, then goes home
        (stepline's own cgroup in each hierarchy): whatever it forks meanwhile is born inside.
        Leaving also lowers ``pids.max`` to the step's own limit (it counted the thread)."""
        tid = str(threading.get_native_id()).encode()
        entered: list[str] = []
        try:
            for path in self.dirs():
                _write_bytes(os.path.join(path, "tasks"), tid)
                entered.append(path)
            yield
        finally:
            self._leave(entered, tid)

    def _leave(self, entered: list[str], tid: bytes) -> None:
        """Back home from every group entered. Not raised: the child is started by now, and
        is the caller's to hold; a thread left inside would only start later children there."""
        try:
            if self.processes is not None:
                self.limit_processes(spare=False)
            for path in entered:
                home = os.path.dirname(os.path.dirname(path))  # step < runner < stepline's own
                _write_bytes(os.path.join(home, "tasks"), tid)
        except OSError as exc:
            log.warning("a spawner thread could not leave cgroup %s: %s", self.track, exc)

    def limit_processes(self, *, spare: bool) -> None:
        """Write ``pids.max``: the step's limit, plus one for a thread stepping in to fork."""
        assert self.pids is not None
        assert self.processes is not None
        _write(os.path.join(self.pids, "pids.max"), str(self.processes + (1 if spare else 0)))

    def dirs(self) -> Iterator[str]:
        yield self.track
        for path in (self.memory, self.pids):
            if path is not None and path != self.track:
                yield path

    def join(self, pid: int) -> None:
        """Move process ``pid`` into this group (every hierarchy); gone already: no matter."""
        text = str(pid).encode()
        for path in self.dirs():
            try:
                _write_bytes(os.path.join(path, "cgroup.procs"), text)
            except ProcessLookupError:
                return
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise

    def procs(self) -> list[int]:
        """The live processes in the group (zombies are not listed)."""
        return [int(p) for p in _read(os.path.join(self.track, "cgroup.procs")).split()]

    def empty(self) -> bool:
        return not _read(os.path.join(self.track, "cgroup.procs"))

    def signal(self, sig: int) -> list[int]:
        """Send ``sig`` to every process in the group; returns those it was sent to."""
        pids = self.procs()
        if sig == signal.SIGKILL and self.version == 2 and pids:
            with contextlib.suppress(OSError):
                _write(os.path.join(self.track, "cgroup.kill"), "1")
                return pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids

    def oom_kill(self) -> OomKill | None:
        """Did the kernel's OOM killer kill a process of this group, and for whose memory?

        ``"limit"``: the group had reached its own limit (the step's ``memory``); ``"other"``:
        something else ran out (the machine, or a cgroup above stepline's, such as a container's
        or a service's limit); None: no OOM kill. The kernel counts an OOM kill in the victim's
        own memory cgroup whatever ran out (``oom_kill`` in v1's ``memory.oom_control``, v2's
        ``memory.events``); whether the group's own limit was reached is v1's ``failcnt`` (a
        charge refused at this group's limit) and v2's ``oom`` event (an OOM at this group's
        limit; on v1 also its peak usage within one charge of the limit, as kernel 6.18 here
        leaves ``failcnt`` at 0 after an OOM at the limit). A group that reached its limit once,
        reclaimed, and later lost a process to an OOM elsewhere is reported as ``"limit"``.
        """
        if self.memory is None:
            return None
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        text = _read(os.path.join(self.memory, name))
        if _counter_in(text, "oom_kill") == 0:
            return None
        if not self.memory_limited:
            return "other"
        if self.version == 2:
            return "limit" if _counter_in(text, "oom") > 0 else "other"
        return "limit" if any(_v1_reached(self.memory, c) for c in _V1_COUNTERS) else "other"

    def processes_maxed(self) -> bool:
        """Was a fork refused because the group was at its process limit?"""
        if self.pids is None:
            return False
        return _counter(os.path.join(self.pids, "pids.events"), "max") > 0

    def remove(self) -> None:
        """Remove the group's directories; a group still holding processes is left (logged)."""
        for path in self.dirs():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", path, exc.strerror)


def _make(parent: str, name: str, made: list[str]) -> str:
    path = os.path.join(parent, name)
    os.mkdir(path)
    made.append(path)
    return path


def _enable(path: str) -> frozenset[str]:
    """Enable memory and pids for the children of v2 group ``path``; returns what is on."""
    control = os.path.join(path, "cgroup.subtree_control")
    wanted = {"memory", "pids"} & set(_read(os.path.join(path, "cgroup.controllers")).split())
    for controller in wanted:
        with contextlib.suppress(OSError):  # EBUSY: the group holds processes (not the root)
            _write(control, f"+{controller}")
    return frozenset(_read(control).split())


def _limit_memory(path: str, limit: int, version: int) -> None:
    """The memory limit, swap included (a limit that can swap is no limit)."""
    if version == 2:
        _write(os.path.join(path, "memory.max"), str(limit))
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "memory.swap.max"), "0")
        return
    _write(os.path.join(path, "memory.limit_in_bytes"), str(limit))
    with contextlib.suppress(OSError):  # no swap accounting on this kernel
        _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit))


def _v1_reached(path: str, counter: str) -> bool:
    """Did v1 group ``path`` reach its limit on ``counter`` (``memory.`` or ``memory.memsw.``):
    a charge refused there (``failcnt``), or its peak usage within one charge of the limit?"""
    numbers = [_read(os.path.join(path, counter + name)).strip() for name in _V1_LIMIT_FILES]
    if not all(n.isdigit() for n in numbers):
        return False  # not there (no swap accounting)
    failcnt, peak, limit = map(int, numbers)
    return failcnt > 0 or peak + _LARGEST_CHARGE >= limit


_V1_LIMIT_FILES = ("failcnt", "max_usage_in_bytes", "limit_in_bytes")


def _counter(path: str, key: str) -> int:
    return _counter_in(_read(path), key)


def _counter_in(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    _write_bytes(path, text.encode())


def _write_bytes(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
