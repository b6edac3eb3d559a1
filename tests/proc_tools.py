"""Looking at processes through ``/proc``: which ones belong to a test, and how big they are.

Fault tests must prove that no process stepline started outlives it, including grandchildren
that left its process groups' bookkeeping behind. Pid files only find the processes a test
knew to ask about; instead the test starts stepline with a unique marker in its environment,
which every descendant inherits, and :func:`tagged_processes` finds every live process carrying
it. Zombies do not count: in this sandbox PID 1 does not reap orphans, so a killed orphan stays
a zombie forever although it is long dead.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

__all__ = [
    "TAG_VAR",
    "new_tag",
    "rss_bytes",
    "state",
    "tagged_env",
    "tagged_processes",
    "wait_for_pids_to_die",
    "wait_until_gone",
]

TAG_VAR = "STEPLINE_TEST_TAG"
_PROC = Path("/proc")


def new_tag() -> str:
    return uuid.uuid4().hex


def state(pid: int) -> str | None:
    """The one-letter state of a process (``R``, ``S``, ``Z``...), or None if it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]  # the command name may hold spaces and parens


def tagged_processes(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``TAG_VAR=tag``."""
    marker = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0") and state(int(entry.name)) not in (None, "Z"):
            found.append(int(entry.name))
    return found


def wait_until_gone(tag: str, timeout: float = 5.0) -> list[int]:
    """Poll until no tagged process is alive; returns those still alive after ``timeout``.

    A SIGKILLed process needs a moment to become a zombie; a real leak never goes away.
    """
    deadline = time.monotonic() + timeout
    while (alive := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def wait_for_pids_to_die(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Poll until none of ``pids`` is alive (zombies count as dead); returns the survivors."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if state(p) not in (None, "Z")]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    return alive


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS``), in bytes."""
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def tagged_env(tag: str) -> dict[str, str]:
    """The environment for a stepline under test: ours, unbuffered, plus the tag."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", TAG_VAR: tag}
