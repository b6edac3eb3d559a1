"""One parent directory for the workspaces of one executor, and the removal, at start-up, of
the parents that dead executors left behind.

Why: a stepline killed with SIGKILL (or crashed) cannot remove the workspaces of the jobs it was
running, nor the empty ones in its pool. Found loose in ``$TMPDIR``, a ``stepline-…`` directory
cannot be told from a live server's (or a kept workspace, which is left on purpose). So every
workspace an executor makes and will remove lives in its own parent,
``$TMPDIR/stepline-server-XXXXXXXX`` (mode 0700), made on first use, and the process holds an
exclusive ``flock`` on that directory for as long as it has it. The kernel drops the lock when the
process dies, however it dies, so "its lock can be taken" means "its owner is gone": no pids (they
are reused), no clocks. :func:`remove_stale_parents` removes the parents whose lock it can take,
and holds the lock while it removes, so two servers starting at once never both remove one, and a
live server's parent is never touched. The lock's descriptor is close-on-exec: the programs of
``run`` steps do not hold it (and keep nothing alive by outliving stepline).

Why the rename: made under the name the sweep looks for, a parent would be visible for a moment
before it is locked, and a sweep in that moment could remove it under its new owner. So it is
made as ``stepline-new-XXXXXXXX``, locked, and only then renamed (atomically) to
``stepline-server-XXXXXXXX``. A process killed inside those three syscalls leaves an empty
``stepline-new-…`` that no sweep removes (the sweep cannot tell it from one being made).

Kept workspaces (``keep_workspace: true``) are made in ``$TMPDIR`` itself: they outlive the
server by design, so they must not be inside what its end (or the next start) removes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable

__all__ = ["PREFIX", "ParentDirectory", "remove_stale_parents"]

log = logging.getLogger("stepline")

RemoveTree = Callable[[str], None]
"""``rm -rf``: the workspace module's, which also gets through directories a step made
read-only (passed in: that module imports this one)."""

PREFIX = "stepline-server-"
"""The name of a parent directory, before its random part."""
_STAGING = "stepline-new-"


class ParentDirectory:
    """The locked parent of one executor's workspaces, made on first use (:meth:`path`, from
    any thread) and removed with everything in it by :meth:`remove`."""

    def __init__(self, remove_tree: RemoveTree) -> None:
        self._remove_tree = remove_tree
        self._lock = threading.Lock()  # workspaces are made in worker threads, several at once
        self._path: str | None = None
        self._fd = -1  # the open directory, flock'ed: held while the process has the parent

    def path(self) -> str:
        """The parent directory, made and locked now if this is its first use (raises
        ``OSError`` when it cannot be made: no space, no temporary directory)."""
        with self._lock:
            if self._path is None:
                self._path, self._fd = _make_locked()
            return self._path

    def remove(self) -> None:
        """Remove the parent and whatever is still in it, then let go of the lock (from then
        on a later :meth:`path` makes a new one)."""
        with self._lock:
            path, fd, self._path, self._fd = self._path, self._fd, None, -1
        if path is None:
            return
        try:
            self._remove_tree(path)
        finally:
            os.close(fd)  # after the removal: a sweep must not find it unlocked half removed


def _make_locked() -> tuple[str, int]:
    staging = tempfile.mkdtemp(prefix=_STAGING)  # mode 0700
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh directory: nobody else has it
        path = os.path.join(os.path.dirname(staging), PREFIX + staging[-8:])
        os.rename(staging, path)  # visible to sweeps only now, already locked
    except BaseException:
        os.close(fd)
        os.rmdir(staging)
        raise
    return path, fd


def remove_stale_parents(remove_tree: RemoveTree, directory: str | None = None) -> list[str]:
    """Remove the parents in ``directory`` (``$TMPDIR`` by default) whose owner is gone: a
    directory named ``stepline-server-…``, ours, not a link, whose lock can be taken. Returns
    the paths removed. Never raises for one parent it cannot judge or remove: it logs and goes
    on (a start-up chore must not stop a server)."""
    directory = tempfile.gettempdir() if directory is None else directory
    removed: list[str] = []
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.startswith(PREFIX)]
    except OSError as exc:
        log.warning("could not look for stale workspaces in %s: %s", directory, exc.strerror)
        return removed
    uid = os.geteuid()
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = _lock_if_stale(path, uid)
        except OSError as exc:
            log.warning("could not check stale workspaces %s: %s", path, exc.strerror)
            continue
        if fd is None:
            continue
        try:
            remove_tree(path)  # under the lock: no other sweep removes it at the same time
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _lock_if_stale(path: str, uid: int) -> int | None:
    """The locked descriptor of ``path`` if it is a parent of ours whose owner is gone; None if
    it is not ours to judge (a link, another user's, not a directory) or its owner is alive."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None  # removed meanwhile by another sweep, or not a directory
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symbolic link: never followed
            return None
        raise
    try:
        if _stale(fd, path, uid):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _stale(fd: int, path: str, uid: int) -> bool:
    info = os.fstat(fd)
    if info.st_uid != uid or not stat.S_ISDIR(info.st_mode):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner holds it: a live server
    # Still the directory at that name? Another sweep may have removed it (holding the lock
    # until just now) between our open and our lock.
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)
