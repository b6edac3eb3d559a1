"""The environments of the processes on this machine, read from ``/proc``.

Both the sweep of a step's tree and the search for what a dead stepline left running find
processes by the ``STEPLINE_TREE`` marker in their environment; this is the one scan they share.
The guardian (:mod:`._guard`) keeps its own copy of this loop: it runs as ``python -I -S``
with no path to import from, so that it needs nothing of stepline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

__all__ = ["environments"]


def environments() -> Iterator[tuple[int, bytes]]:
    """Each other process's pid and raw environment (NUL-separated); unreadable ones skipped
    (gone meanwhile, or not ours to read)."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        yield int(name), environ
