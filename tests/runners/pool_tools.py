"""Helpers of the C start's tests (``test_briefc.py``, ``test_pool.py``): the C module, a pool of
C threads driven directly, its outcomes waited for, a started child found in ``/proc``."""

from __future__ import annotations

import os
import select
from typing import Any

from stepline.runners import _spawn

HANG = 10.0  # seconds before a wait that should have ended counts as a hang


def briefc() -> Any:
    """The C module (imported here: only where it is built, ``require_brief_c``), for its
    ``Pool`` and its outcome constants."""
    from stepline.runners import _briefc

    return _briefc


def new_pool(threads: int) -> Any:
    """A ``_briefc.Pool`` of ``threads`` threads."""
    return briefc().Pool(threads)


def submit(
    pool: Any,
    token: int,
    argv: list[str],
    *,
    wait_ms: int = int(HANG * 1000),
    cwd: str | None = None,
) -> None:
    """Queue ``argv`` (found on ``PATH`` as a step's start finds it) under ``token``."""
    start = _spawn.brief_start(argv, None, cwd)
    assert start is not None
    pool.submit(token, argv, start[0], None, cwd, _spawn.devnull(), wait_ms)


def collect(pool: Any, count: int) -> list[tuple[int, ...]]:
    """``count`` outcomes from ``pool``, waiting on its notify pipe."""
    got: list[tuple[int, ...]] = []
    while len(got) < count:
        assert select.select([pool.fileno()], [], [], HANG)[0], "no outcome came"
        got += pool.collect()
    return got


def until_running(marker: str) -> None:
    """Until a ``sleep`` with ``marker`` in its arguments runs (its start is done, its wait
    under way): a scan of ``/proc``."""
    for _ in range(int(HANG * 100)):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if cmdline.startswith(b"sleep\0") and marker.encode() in cmdline:
                return
        select.select([], [], [], 0.01)
    raise AssertionError(f"no sleep {marker} came")
