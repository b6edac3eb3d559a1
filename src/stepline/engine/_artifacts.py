"""Copying a job's ``artifacts`` out of its workspace before the workspace is removed.

The job's patterns (checked at submit by :mod:`stepline.spec._artifacts`) are matched in the
workspace; every regular file they match is copied to ``DIR/JOBID/`` (``--artifacts DIR``)
under its path relative to the workspace, hashing it on the way, and listed in the job's
``finished`` event as ``{"path", "bytes", "sha256"}`` — whatever the job's ending, since the
reports of a failed job are the ones most wanted.

Why only regular files, never through a symbolic link: a step could plant a link to any file
the executor can read (``ln -s ~/.ssh/id_rsa report.xml``), and the copy would carry it out of
the workspace. A match whose resolved path is not inside the workspace is skipped.

The copy runs in a worker thread (files may be large) and shielded from cancellation (a
cancelled job still gets its artifacts, as a failed one does). A job whose directory already
exists under ``DIR`` (ids restart at ``j1`` without ``--state``) replaces it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

__all__ = ["collect_artifacts"]

log = logging.getLogger("stepline")

_CHUNK: Final = 1 << 20


async def collect_artifacts(
    workspace: str | None, patterns: Sequence[str], root: str, job_id: str
) -> list[dict[str, Any]]:
    """Copy what ``patterns`` match in ``workspace`` to ``root/job_id``; the ``finished`` list."""
    if workspace is None:
        return []  # the job never made a workspace, so it made no files there
    with trio.CancelScope(shield=True):
        listed = await trio.to_thread.run_sync(_collect, workspace, patterns, root, job_id)
    return listed  # noqa: RET504 -- mypy wants a return after a `with` of a cancel scope


def _collect(
    workspace: str, patterns: Sequence[str], root: str, job_id: str
) -> list[dict[str, Any]]:
    base = Path(workspace).resolve()
    files = _matches(base, patterns)
    if not files:
        return []
    dest = Path(root) / job_id
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    listed = []
    for relative in files:
        listed.append(_copy(base / relative, dest / relative, relative))
    return listed


def _matches(base: Path, patterns: Sequence[str]) -> list[str]:
    """Relative paths of the regular files inside ``base`` that some pattern matches, sorted."""
    found: set[str] = set()
    for pattern in patterns:
        for path in base.glob(pattern):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                relative = path.resolve().relative_to(base)
            except (OSError, ValueError):
                continue  # reached through a linked directory: outside the workspace
            found.add(relative.as_posix())
    return sorted(found)


def _copy(source: Path, target: Path, relative: str) -> dict[str, Any]:
    """Copy one file, hashing it on the way; an error is listed instead of the file's hash."""
    digest = hashlib.sha256()
    size = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDONLY | os.O_NOFOLLOW
        with os.fdopen(os.open(source, flags), "rb") as src, target.open("wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except OSError as exc:
        log.warning("artifact %s not copied: %s", relative, exc)
        return {"path": relative, "error": f"not copied: {exc.strerror or exc}"}
    return {"path": relative, "bytes": size, "sha256": digest.hexdigest()}
