"""The job's workspace: one scratch directory shared by every step and task of a job.

``run`` steps without a ``cwd`` of their own run in it, and ``${job.workspace}`` names it, so the
tasks of a graph can hand files to each other (``fetch`` writes ``a.csv``, ``load`` reads it).

Why lazily: creating and removing a directory is not free — on the ext4 disk these notes were
measured on, ``mkdir`` took about 60 µs and ``rmdir`` about 210 µs, as much as a third of
starting a process. Most jobs (``{"value": 1}``, ``sleep``, ``http``) never touch a directory, so
the workspace is created on first use: when a ``run`` step without ``cwd`` starts, or when
``${job.workspace}`` is resolved. A job that never uses it costs one small object and no syscall.

Removal happens when the job's steps are done, before its ``finished`` event (a driver that sees
``finished`` may rely on the directory being gone), in a worker thread (a big tree must not stall
the event loop) and shielded from cancellation (a cancelled job is still cleaned up). A job with
``keep_workspace: true`` keeps it; a ``workspace`` event then tells where it is.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._errors import InvalidJob, StepFailed
from ._events import EmitFn, event
from ._graph import describe

if TYPE_CHECKING:
    from ._interpret import StepContext
    from ._spec import Run
    from ._validate import _Validator

__all__ = ["Workspace", "parse_keep_workspace", "workspace_cwd"]

log = logging.getLogger("stepline")


class Workspace:
    """One job's scratch directory, created by :meth:`path` on first use, removed by
    :meth:`aclose` unless ``keep``."""

    __slots__ = ("_emit", "_path", "job_id", "keep")

    def __init__(self, job_id: str, *, keep: bool = False, emit: EmitFn | None = None) -> None:
        self.job_id = job_id
        self.keep = keep
        self._emit = emit
        self._path: str | None = None

    @property
    def created(self) -> bool:
        return self._path is not None

    def path(self) -> str:
        """The directory, created now if needed (private to this user: mode 0700).

        Raises ``OSError`` when it cannot be created (no space, no temporary directory).
        """
        if self._path is None:
            self._path = _make_workspace(self.job_id)
            if self.keep and self._emit is not None:
                self._emit(event("workspace", job=self.job_id, path=self._path))
        return self._path

    async def ensure(self) -> str:
        """:meth:`path`, creating the directory in a worker thread.

        ``mkdir`` on a journaled disk took 60-325 µs here; on the event loop that serialised every
        worker behind it (process jobs ran at 0.3x ``xargs -P8``), in a thread they overlap.
        """
        if self._path is not None:
            return self._path
        path = await trio.to_thread.run_sync(_make_workspace, self.job_id)
        if self.created:  # created meanwhile through path() (a reference resolved by a sibling)
            await trio.to_thread.run_sync(os.rmdir, path)
            return self.path()
        self._path = path
        if self.keep and self._emit is not None:
            self._emit(event("workspace", job=self.job_id, path=path))
        return path

    async def aclose(self) -> None:
        """Remove the directory (if it was created and is not kept), whatever happened."""
        path, self._path = self._path, None
        if path is None or self.keep:
            return
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(remove_tree, path)


def _make_workspace(job_id: str) -> str:
    return tempfile.mkdtemp(prefix=f"stepline-{job_id}-")


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


def parse_keep_workspace(v: _Validator, raw: dict[Any, Any], base: str) -> bool:
    """The job-level ``keep_workspace``: true or false (default false)."""
    if "keep_workspace" not in raw:
        return False
    value = v._resolve(raw["keep_workspace"], base, "keep_workspace")
    if type(value) is not bool:
        where = f"{base}.keep_workspace" if base else "keep_workspace"
        raise InvalidJob(where, f"expected true or false, got {describe(value)}")
    return value
