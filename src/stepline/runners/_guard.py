"""The guardian: kills what stepline's steps left running once stepline itself is gone.

Run as a script (``python -I -S _guard.py MARKER DIR...``), never imported: it must start fast
and need nothing of stepline. stepline starts it once, in a session of its own (a signal to
stepline's process group does not reach it), with a pipe on its stdin that only stepline holds.
When stepline ends, by any path including SIGKILL, the kernel closes that pipe; the guardian
then SIGKILLs every process in the runner's cgroup directories ``DIR...`` (all step groups below
them) and every process whose environment carries ``STEPLINE_TREE=MARKER.`` (steps started
without a cgroup), until none is left, removes the directories, and exits.

A parent-death signal would not do: it reaches only a direct child, and a step's tree is not
that; and only a process that outlives stepline can clean up after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

_ROUNDS = 200  # 10 ms apart: two seconds, the promise, for a tree that keeps forking


def _cgroup_pids(root: str) -> list[int]:
    pids: list[int] = []
    for path, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids.extend(int(p) for p in f.read().split())
            except OSError:
                pass
    return pids


def _marked_pids(marker: bytes) -> list[int]:
    pids: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if marker in environ:
            pids.append(int(name))
    return pids


def _remove(root: str) -> None:
    for path, _dirs, _files in os.walk(root, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def sweep(marker: str, roots: list[str]) -> None:
    """SIGKILL everything of the runner until nothing is left (or two seconds pass)."""
    needle = b"STEPLINE_TREE=" + marker.encode() + b"."
    for _ in range(_ROUNDS):
        pids = [p for root in roots for p in _cgroup_pids(root)]
        pids += _marked_pids(needle)
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    for root in roots:
        _remove(root)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for stepline
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    marker, roots = sys.argv[1], sys.argv[2:]
    while os.read(0, 4096):  # until stepline is gone: EOF when its end of the pipe closes
        pass
    sweep(marker, roots)


if __name__ == "__main__":
    main()
