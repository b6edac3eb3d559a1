"""What dead steplines' steps left running: found and stopped before a stepline's first step.

Normally nothing is left: when stepline dies, its guardian (:mod:`._guard`) kills its steps'
trees within two seconds. But the guardian can die too (a ``kill -9`` of both, an OOM kill),
and a stepline restarted at once with ``--state`` reruns the jobs that were running: without
this sweep, a rerun job could run beside what is left of its earlier run, both writing the same
files. So before a stepline process starts its first step (:class:`~._tree.Containment` is made
then) it stops every process left by a stepline that no longer exists, and waits until they are
gone.

A leftover is found by its marks: the ``STEPLINE_TREE=PID-RUNNER.STEP`` environment variable
every step's process inherits, and the ``stepline-PID-RUNNER`` cgroup directories, whose ``PID``
is the stepline that made them. A mark whose stepline is alive (or whose pid was reused by
another process meanwhile) is left alone: only the owner stops its own steps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import time
from typing import Final

from ._cgroup import detect
from ._proc import environments

__all__ = ["sweep_leftovers"]

log = logging.getLogger("stepline")

_MARK: Final = re.compile(rb"(?:^|\0)STEPLINE_TREE=(\d+)-")
_GROUP: Final = re.compile(r"stepline-(\d+)-\d+")


def sweep_leftovers(timeout: float = 2.0) -> int:
    """SIGKILL every process left by a dead stepline until none is left (or ``timeout``
    passes: logged), then remove its cgroup directories; returns how many were killed. One scan
    of ``/proc`` when there is nothing to do."""
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    groups = _dead_groups()
    while found := _dead_marked() + [p for g in groups for p in _procs(g)]:
        if time.monotonic() > deadline:
            log.warning("processes left by a dead stepline would not die: %s", found[:10])
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(found)
        time.sleep(0.01)
    for group in groups:
        _remove(group)
    if killed:
        log.warning("stopped %d processes left running by a dead stepline", len(killed))
    return len(killed)


def _dead_marked() -> list[int]:
    """Live processes of our PID namespace whose marker names a stepline that is gone (a
    process in a sandbox's namespace may carry a marker of a stepline in there)."""
    namespace = _namespace("self")
    found = []
    for pid, environ in environments():
        mark = _MARK.search(environ)
        if mark is None or _alive(int(mark.group(1))) or _namespace(str(pid)) != namespace:
            continue
        found.append(pid)
    return found


def _namespace(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def _dead_groups() -> list[str]:
    """The cgroup directories of steplines that are gone, in every hierarchy mounted here."""
    found = []
    for hierarchy in detect():
        try:
            names = os.listdir(hierarchy.base)
        except OSError:
            continue
        for name in names:
            match = _GROUP.fullmatch(name)
            if match is not None and not _alive(int(match.group(1))):
                found.append(os.path.join(hierarchy.base, name))
    return found


def _alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie is not: its stepline is dead, just not reaped)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _procs(root: str) -> list[int]:
    pids: list[int] = []
    for path, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError), open(f"{path}/cgroup.procs") as f:
                pids.extend(int(p) for p in f.read().split())
    return pids


def _remove(root: str) -> None:
    for path, _dirs, _files in os.walk(root, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(path)
