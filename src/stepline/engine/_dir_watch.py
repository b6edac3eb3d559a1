"""Which pooled workspace directories are untouched since they were last found fit (inotify).

Why: before a job's directory goes back to the pool it must be as good as new (ours, a
directory, mode 0700, empty: :mod:`._workspace`), and checking that with an ``lstat`` and a
``scandir`` (open, two ``getdents64``, close) cost the event loop about 50 CPU-µs per
``{"run": ["true"]}`` job on a busy server, some 15 % of all it spends on such a job (NOTES.md,
Performance, "Session 9"). Most jobs never touch their directory. So each pooled directory is
watched with inotify from the moment before its first full check: the kernel queues an event
for every entry made, moved in or removed, for every change of its mode, owner or times, and
for the directory itself moved or deleted, before the system call that made the change
returns. A directory found fit whose watch has reported nothing since is still fit, and the
check is one ``poll`` of the inotify descriptor (no events pending: nothing changed anywhere);
with events pending they are read, and every directory they name is checked in full again.

Why it is exact, not a heuristic: the job's processes are gone when its directory is given
back (the caller's checks), so every change they made is already queued; a queue that
overflowed (``IN_Q_OVERFLOW``) makes every directory be checked in full again; the watch is
placed before the full check, so nothing between that check and the watch goes unseen.
Where inotify is missing (not Linux, no ``libc`` symbol, the user's watch limit reached),
every give-back takes the full check, as before.

Loaded on the first give-back (``ctypes`` costs start-up time), by the event loop only.
"""

from __future__ import annotations

import os
import select
import struct
import weakref
from collections.abc import Callable
from typing import Final

__all__ = ["DirWatch"]

# <sys/inotify.h>: what changes a directory's entries, its mode, owner or times, or moves or
# removes it; IN_Q_OVERFLOW and IN_IGNORED come whatever the mask.
_IN_ATTRIB: Final = 0x004
_IN_MOVED_FROM: Final = 0x040
_IN_MOVED_TO: Final = 0x080
_IN_CREATE: Final = 0x100
_IN_DELETE: Final = 0x200
_IN_DELETE_SELF: Final = 0x400
_IN_MOVE_SELF: Final = 0x800
_IN_Q_OVERFLOW: Final = 0x4000
_IN_IGNORED: Final = 0x8000
_IN_ONLYDIR: Final = 0x01000000
_IN_DONT_FOLLOW: Final = 0x02000000
_MASK: Final = (
    _IN_ATTRIB
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
    | _IN_DONT_FOLLOW
)
_EVENT: Final = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (+ name)


class DirWatch:
    """Directories found fit and unchanged since (module docstring). :meth:`arm` before a
    full check, :meth:`passed` after one that passed, :meth:`unchanged` instead of the next."""

    __slots__ = ("__weakref__", "_add_watch", "_clean", "_closing", "_fd", "_paths", "_poll")

    def __init__(self) -> None:
        self._fd = -1
        self._closing: weakref.finalize[[int], DirWatch] | None = None
        self._paths: dict[int, str] = {}  # watch descriptor -> the directory it watches
        self._clean: set[str] = set()  # found fit, and no event about them read since
        self._poll: select.poll | None = None
        self._add_watch: Callable[[int, bytes, int], int] | None = None
        try:
            import ctypes  # start-up time: only once a workspace is given back

            libc = ctypes.CDLL(None)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (ImportError, OSError, AttributeError):  # no inotify: every check a full one
            return
        if fd < 0:
            return
        self._fd = fd
        # An inotify instance counts against the user's few (128 by default): a watch never
        # closed (an executor that never ran to its end) gives its own back when collected.
        self._closing = weakref.finalize(self, os.close, fd)
        self._add_watch = libc.inotify_add_watch
        self._poll = poll = select.poll()
        poll.register(fd, select.POLLIN)

    def unchanged(self, path: str) -> bool:
        """Whether ``path`` passed a full check and nothing about it changed since."""
        if path not in self._clean:
            return False
        assert self._poll is not None  # (nothing is clean without a watch)
        if self._poll.poll(0):
            self._read_events()
        return path in self._clean

    def arm(self, path: str) -> bool:
        """Watch ``path`` (before its full check); False: it cannot be watched."""
        if self._add_watch is None:
            return False
        assert self._poll is not None
        if self._poll.poll(0):  # (so that the removed directories' watches are let go of)
            self._read_events()
        self._clean.discard(path)
        wd = self._add_watch(self._fd, os.fsencode(path), _MASK)
        if wd < 0:  # ENOSPC (the user's watches are used up), ENOENT, ENOTDIR: check in full
            return False
        self._paths[wd] = path
        return True

    @property
    def watched(self) -> int:
        """How many watches are known (removed directories' are let go of as events are read)."""
        return len(self._paths)

    def passed(self, path: str) -> None:
        """``path``, watched by :meth:`arm` before, passed its full check."""
        self._clean.add(path)

    def close(self) -> None:
        if self._closing is not None:
            self._closing()  # os.close, once
            self._fd = -1
            self._add_watch = None
            self._clean.clear()
            self._paths.clear()

    def _read_events(self) -> None:
        """Read every pending event: the directories they name are no longer known clean."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            try:
                self._forget(data)
            except struct.error:  # (the kernel writes whole events): nothing is known clean
                self._clean.clear()

    def _forget(self, data: bytes) -> None:
        paths, clean = self._paths, self._clean
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW:  # events were lost: nothing is known clean, and the
                clean.clear()  # watches of removed directories may never say they are gone
                paths.clear()  # (a directory watched still is mapped again when next armed)
                continue
            path = paths.get(wd)
            if path is not None:
                clean.discard(path)
                if mask & _IN_IGNORED:  # the watch is gone (the directory was removed)
                    del paths[wd]
