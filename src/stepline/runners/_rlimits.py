"""A step's rlimits: the per-process limits a cgroup does not carry, set before its first
instruction.

Setting them on the started process (``prlimit(2)`` from stepline) leaves a window: a program
that opens files in its first milliseconds could do so before its ``files`` limit applied, and
on a loaded machine the window grew to the whole program (a Python child opened 100 files under
``files: 20``). Setting them in the child between fork and exec needs ``preexec_fn``, which makes
CPython fork the whole interpreter instead of vfork (1.2-3.7 ms a start, NOTES.md,
Containment). So a step with rlimits starts as ``prlimit --nofile=N:N -- PROGRAM ARGS``:
util-linux's ``prlimit(1)`` sets them on itself and execs the program, which inherits them. One
more exec (about 0.6 ms here), paid only by steps that ask for such a limit. Where ``prlimit``
is missing the limits are still set right after the start, with the window (docs/containment.md).
"""

from __future__ import annotations

import contextlib
import functools
import resource
import shutil
from typing import Final

from ..spec._limits import NO_LIMITS, Limits
from ._cgroup import StepGroup

__all__ = ["apply_rlimits", "needs_cgroup", "prlimit_prefix", "rlimit_hint"]

Rlimit = tuple[int, tuple[int, int]]  # (resource.RLIMIT_*, (soft, hard))

_OPTIONS: Final = {
    resource.RLIMIT_CPU: "--cpu",
    resource.RLIMIT_NOFILE: "--nofile",
    resource.RLIMIT_DATA: "--data",
    resource.RLIMIT_NPROC: "--nproc",
}


def needs_cgroup(limits: Limits) -> bool:
    """Limits of the whole tree, which rlimits (per process, or per user) cannot carry."""
    return limits is not NO_LIMITS and (limits.memory is not None or limits.processes is not None)


def wanted_rlimits(limits: Limits, group: StepGroup | None) -> list[Rlimit]:
    """Per-process limits: cpu and files always; memory and processes without a cgroup."""
    if limits is NO_LIMITS:
        return []
    wanted = []
    if limits.cpu is not None:
        seconds = max(1, int(limits.cpu + 0.999))
        wanted.append((resource.RLIMIT_CPU, (seconds, seconds + 1)))  # SIGXCPU, then SIGKILL
    if limits.files is not None:
        wanted.append((resource.RLIMIT_NOFILE, (limits.files, limits.files)))
    if limits.memory is not None and (group is None or group.memory is None):
        wanted.append((resource.RLIMIT_DATA, (limits.memory, limits.memory)))
    if limits.processes is not None and (group is None or group.pids is None):
        wanted.append((resource.RLIMIT_NPROC, (limits.processes, limits.processes)))
    return wanted


def prlimit_prefix(limits: Limits, group: StepGroup | None) -> tuple[str, ...]:
    """``(prlimit, --OPTION=SOFT:HARD..., --)`` for the step's rlimits; empty when there are
    none, or no ``prlimit`` on this machine."""
    wanted = wanted_rlimits(limits, group)
    program = _prlimit()
    if not wanted or program is None:
        return ()
    options = (f"{_OPTIONS[which]}={soft}:{hard}" for which, (soft, hard) in wanted)
    return (program, *options, "--")


def apply_rlimits(pid: int, limits: Limits, group: StepGroup | None) -> None:
    """Set the step's rlimits on a started process (again, where :func:`prlimit_prefix` set
    them already: the same values, so no harm; and on what it forked before this)."""
    for which, value in wanted_rlimits(limits, group):
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, which, value)


@functools.cache
def _prlimit() -> str | None:
    return shutil.which("prlimit")


_HINTS: Final = (
    ("files", "files", ("Too many open files",)),
    ("memory", "memory", ("MemoryError", "Cannot allocate memory", "out of memory")),
    ("processes", "processes", ("Resource temporarily unavailable",)),
)


def rlimit_hint(limits: Limits, stderr: str, group: StepGroup | None) -> str | None:
    """An rlimit leaves no count behind: a failed step whose stderr says the matching error
    (``EMFILE``, ``ENOMEM``, ``EAGAIN`` from fork) ran into it, as far as anyone can tell."""
    tail = stderr[-4096:]
    for name, attr, phrases in _HINTS:
        if getattr(limits, attr) is None:
            continue
        if name == "memory" and group is not None and group.memory is not None:
            continue
        if name == "processes" and group is not None and group.pids is not None:
            continue
        if any(phrase in tail for phrase in phrases):
            return name
    return None
