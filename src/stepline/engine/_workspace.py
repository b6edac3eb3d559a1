"""The job's workspace: one scratch directory shared by every step and task of a job.

``run`` steps without a ``cwd`` of their own run in it, and ``${job.workspace}`` names it, so the
tasks of a graph can hand files to each other (``fetch`` writes ``a.csv``, ``load`` reads it).

Why lazily: creating and removing a directory is not free (a ``mkdir`` and an ``rmdir`` cost as much
as a third of starting a process; NOTES.md, "The workspace"). Most jobs (``{"value": 1}``,
``sleep``, ``http``) never touch a directory, so the workspace is created on first use: when a
``run`` step without ``cwd`` starts, or when ``${job.workspace}`` is resolved. A job that never uses
it costs one small object and no syscall.

Removal happens when the job's steps are done, before its ``finished`` event (a driver that sees
``finished`` may rely on the directory being gone), in a worker thread (a big tree must not stall
the event loop) and shielded from cancellation (a cancelled job is still cleaned up). A job with
``keep_workspace: true`` keeps it; a ``workspace`` event then tells where it is.

A hard stop (a second SIGINT/SIGTERM: :meth:`WorkspacePool.stop_hard`) must not wait for a big
tree: the process has about a second to write every ``finished`` and ``bye``. So removals under
way are abandoned (their thread goes on deleting), later ones are not started, and the directories
are noted; the program removes them once its last event is written
(:meth:`WorkspacePool.remove_abandoned`), before it exits. No workspace is left either way.

Why a pool: a ``mkdir`` and an ``rmdir`` per job, and the thread hops that keep them off the event
loop, cost as much CPU as the rest of a ``{"run": ["true"]}`` job (NOTES.md, "The workspace"). So
the executor keeps a :class:`WorkspacePool` of empty directories (at most one per worker). A
finished job's directory is handed to a later job instead of being removed only if it is as good as
new: no process the job started is alive in its process group (a background process left behind
could otherwise write into the next job's directory; the directory is removed under it instead, as
before), and :func:`_reusable` finds it still a directory of ours with mode 0700, and empty. That
read is spared while the directory's inotify watch has reported nothing since it last passed
(:mod:`._dir_watch`: most jobs never touch their directory). A process that left its group with
``setsid`` is out of sight here, as it is out of reach of a stop. Everything else — a file left
behind, a kept workspace, a full pool — is removed as before. Names therefore carry no job id
(``stepline-k2x9…``), and when ``finished`` is emitted the job's files are gone but its directory
may live on, empty, for another job.

Where: every workspace the pool makes lives in the executor's own locked parent directory
(``$TMPDIR/stepline-server-…``, :mod:`._workspace_parent`), removed when the executor closes; if
stepline is killed, the next one to start removes it (:meth:`WorkspacePool.remove_stale`), and a
live server's is never touched. Kept workspaces are made in ``$TMPDIR`` itself: they outlive the
server on purpose.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import StepFailed
from ..spec._model import Fail, Log, Sleep, Step, Value
from ..wire._events import EmitFn, event
from ._workspace_parent import ParentDirectory, remove_stale_parents

if TYPE_CHECKING:
    import outcome  # trio's own dependency: the type of what a thread of trio's delivers

    from ..spec._model import Run
    from ._dir_watch import DirWatch
    from ._interpret import StepContext

__all__ = [
    "Workspace",
    "WorkspacePool",
    "without_files",
    "workspace_cwd",
]

log = logging.getLogger("stepline")


def without_files(body: Step) -> bool:
    """Whether a job with this body can never use a workspace: one leaf step that touches no
    directory. Such a job gets no :class:`Workspace` object at all: on the hot path of trivial
    jobs even that small object shows (NOTES.md, Performance). Anything else gets one,
    created only if used."""
    return type(body) in _FILELESS


_FILELESS = frozenset({Value, Sleep, Log, Fail})


class WorkspacePool:
    """Empty workspace directories kept for later jobs (see the module docstring for why)."""

    def __init__(self, size: int) -> None:
        self._free: list[str] = []
        self._size = size
        self._uid = os.geteuid()  # who "ours" is: asked once, not once per job
        self._removals: set[trio.CancelScope] = set()  # removals under way
        self._hard_stop = False
        self.abandoned: list[str] = []  # left by a hard stop, for remove_abandoned()
        self._parent = ParentDirectory(remove_tree)  # where make() puts workspaces
        self._watch: DirWatch | None = None  # made on the first give_back

    def make(self) -> str:
        """A new workspace directory in this pool's parent (made on first use); from any
        thread. Raises ``OSError`` when it cannot be made."""
        return tempfile.mkdtemp(prefix="stepline-", dir=self._parent.path())

    @staticmethod
    def remove_stale_soon() -> None:
        """Start removing, in a thread of its own, the workspaces of servers that died without
        removing them (a SIGKILL, a crash): the parents in ``$TMPDIR`` no live process holds.

        Not awaited, so neither the start nor the shutdown waits for a big tree, and trio's mock
        clock does not jump ahead while it runs (a thread awaited through ``to_thread`` counts
        as every task blocked). Should the process end first, the lock is free again and the
        next start goes on with it.

        ``$TMPDIR`` is resolved here, on the calling thread: Python's first ``gettempdir`` writes
        and removes a probe file there, and a process that ended while the thread was between
        the two (a server given no work, say) left that file behind."""
        directory = tempfile.gettempdir()
        trio.lowlevel.start_thread_soon(
            functools.partial(_remove_stale, directory),
            _log_failure,
            name="stepline stale workspaces",
        )

    def has_free(self) -> bool:
        """Whether :meth:`take` would give a directory now."""
        return bool(self._free)

    def take(self) -> str | None:
        """A directory to use, or None when the pool is empty."""
        return self._free.pop() if self._free else None

    def give_back(self, path: str, process_groups: Iterable[int]) -> bool:
        """Keep ``path`` for a later job if it is fit; False: the caller must remove it.

        Fit is what :func:`_reusable` checks; a directory that passed that check before and
        whose inotify watch has reported nothing since is as fit as it was, and is not read
        again (:mod:`._dir_watch`: the ``lstat`` and ``scandir`` were most of a give-back)."""
        if len(self._free) >= self._size or any(map(_group_alive, process_groups)):
            return False
        watch = self._watch
        if watch is None:
            from ._dir_watch import DirWatch  # start-up time: ctypes, on the first give-back

            watch = self._watch = DirWatch()
        if not watch.unchanged(path):
            armed = watch.arm(path)  # before the check: nothing after it goes unseen
            if not _reusable(path, self._uid):
                return False
            if armed:
                watch.passed(path)
        self._free.append(path)
        return True

    def clear(self) -> None:
        """Remove every pooled directory (they are empty: one ``rmdir`` each), and the parent
        unless a hard stop left removals to :meth:`remove_abandoned`."""
        free, self._free = self._free, []
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        for path in free:
            try:
                os.rmdir(path)
            except OSError as exc:
                log.warning("could not remove pooled workspace %s: %s", path, exc.strerror)
        if not self._hard_stop:
            self._parent.remove()  # every job's workspace is gone: one rmdir

    async def remove(self, path: str) -> None:
        """``rm -rf path`` in a worker thread, shielded from cancellation but not from a hard
        stop, which leaves it to :meth:`remove_abandoned`."""
        if self._hard_stop:
            self.abandoned.append(path)
            return
        with trio.CancelScope(shield=True) as scope:
            self._removals.add(scope)
            try:
                await trio.to_thread.run_sync(remove_tree, path, abandon_on_cancel=True)
            finally:
                self._removals.discard(scope)
        if scope.cancelled_caught:
            self.abandoned.append(path)

    def stop_hard(self) -> None:
        """Stop waiting for removals: the ones under way and the ones to come are abandoned."""
        self._hard_stop = True
        for scope in self._removals:
            scope.cancel()

    def remove_abandoned(self) -> None:
        """Remove the directories a hard stop left (synchronously: the program is ending)."""
        abandoned, self.abandoned = self.abandoned, []
        for path in abandoned:
            remove_tree(path)
        self._parent.remove()


def _remove_stale(directory: str) -> None:
    removed = remove_stale_parents(remove_tree, directory)
    if removed:
        log.info("removed the workspaces of %d stopped server(s): %s", len(removed), removed)


def _log_failure(result: outcome.Outcome[None]) -> None:
    try:
        result.unwrap()
    except Exception:  # a bug: say so, but a start-up chore never stops a server
        log.warning("removing stale workspaces failed", exc_info=True)


def _reusable(path: str, uid: int) -> bool:
    """Is ``path`` as good as new: ours, a directory, mode 0700, empty? (Nothing of the job
    may still run in it: the caller checked its process groups first.)"""
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != 0o700:
            return False
        if info.st_uid != uid:
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: the id now belongs to someone else's group; play safe
        return True
    return True


class Workspace:
    """One job's scratch directory, taken on first use by :meth:`path` or :meth:`ensure`,
    handed back or removed by :meth:`aclose` unless ``keep``."""

    __slots__ = ("_emit", "_path", "_pool", "job_id", "keep", "process_groups")

    def __init__(
        self,
        job_id: str,
        *,
        keep: bool = False,
        emit: EmitFn | None = None,
        pool: WorkspacePool | None = None,
    ) -> None:
        self.job_id = job_id
        self.keep = keep
        self._emit = emit
        self._pool = pool
        self._path: str | None = None
        self.process_groups: tuple[int, ...] = ()  # of processes that ran in it (for reuse)

    @property
    def created(self) -> bool:
        return self._path is not None

    def path(self) -> str:
        """The directory, taken or created now if needed (private to this user: mode 0700).

        Raises ``OSError`` when it cannot be created (no space, no temporary directory).
        """
        if self._path is None:
            self._adopt(self._take() or self._make())
        assert self._path is not None
        return self._path

    async def ensure(self) -> str:
        """:meth:`path`, creating a new directory in a worker thread.

        ``mkdir`` on a journaled disk can take hundreds of microseconds; on the event loop that
        would serialise every worker behind it, in a thread they overlap. A pooled directory
        needs no syscall at all.
        """
        if self._path is not None:
            return self._path
        path = self._take()
        if path is None:
            path = await trio.to_thread.run_sync(self._make)
            if self.created:  # created meanwhile through path() (a reference resolved by a sibling)
                await trio.to_thread.run_sync(os.rmdir, path)
                return self.path()
        self._adopt(path)
        return path

    def ran_process(self, pgid: int) -> None:
        """A process (leading group ``pgid``) ran in the directory: checked before reuse."""
        self.process_groups = (*self.process_groups, pgid)

    def _take(self) -> str | None:
        return None if self._pool is None or self.keep else self._pool.take()

    def _make(self) -> str:
        """A new directory: in the pool's parent, or in ``$TMPDIR`` itself when kept (it must
        outlive the server) or without a pool."""
        if self._pool is None or self.keep:
            return tempfile.mkdtemp(prefix="stepline-")
        return self._pool.make()

    def _adopt(self, path: str) -> None:
        self._path = path
        if self.keep and self._emit is not None:
            self._emit(event("workspace", job=self.job_id, path=path))

    async def aclose(self) -> None:
        """Hand the directory back to the pool, or remove it, unless it is kept."""
        path, self._path = self._path, None
        if path is None or self.keep:
            return
        if self._pool is None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(remove_tree, path)
        elif not self._pool.give_back(path, self.process_groups):
            await self._pool.remove(path)


def remove_tree(path: str) -> None:
    """``rm -rf path``, also through directories a step made read-only; logs what remains."""
    failures: list[str] = []

    def retry_writable(func: Callable[..., Any], name: str, _exc: object) -> None:
        try:
            parent = os.path.dirname(name)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
            func(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failures.append(f"{name}: {exc.strerror}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry_writable)
    else:
        shutil.rmtree(path, onerror=retry_writable)
    if failures:
        log.warning("could not remove all of workspace %s: %s", path, "; ".join(failures[:3]))


async def workspace_cwd(ctx: StepContext, step: Run) -> str | None:
    """The default ``cwd`` of a ``run`` step: the job's workspace (created now if needed)."""
    workspace = ctx.workspace
    if workspace is None:
        return None  # a context without a workspace (embedded use): stepline's own cwd
    try:
        return await workspace.ensure()
    except OSError as exc:
        message = f"cannot create the job's workspace: {exc}"
        raise StepFailed("startup_failure", message, step.path, step.mods.name) from None
