"""Which finished jobs the table keeps for ``status``, and the byte budget of their outputs.

Finished records are kept up to ``keep`` most recent ones, so a long-lived executor does not
grow without limit. Their outputs are bounded in bytes as well (``keep_bytes``,
:data:`KEEP_BYTES` by default): a ``run`` step's output can be 2 MiB, and 1,000 kept records of
those were 2 GiB and a ``status`` line of as much. The most recent outputs are kept up to that
budget; an older record gives its output up (``output`` null, ``output_dropped``: the output's
size in encoded bytes). Its ``finished`` event had carried it whole. Outputs under
:data:`SMALL_OUTPUT` bytes are not counted: ``keep`` bounds them.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat, starmap
from typing import TYPE_CHECKING, Any, Final

import orjson

from ._states import JobState

if TYPE_CHECKING:
    from ._jobs import Job

__all__ = ["KEEP_BYTES", "SMALL_OUTPUT", "Retention", "output_size"]

KEEP_BYTES: Final = 16 << 20
"""Default budget, in encoded bytes, for the outputs that finished records keep for ``status``."""

SMALL_OUTPUT: Final = 1024
"""Outputs smaller than this (in encoded bytes) are not counted against the budget."""


class Retention:
    """The finished jobs kept, in finish order, and the outputs and logs they keep."""

    def __init__(self, keep: int, keep_bytes: int) -> None:
        self._keep = keep
        self._keep_bytes = keep_bytes
        self._finished: deque[Job] = deque()
        # Kept records whose output counts against keep_bytes, in finish order (a subsequence
        # of _finished), and the sum of those outputs' sizes.
        self._weighty: deque[Job] = deque()
        self._kept_bytes = 0

    def add(self, job: Job, output_size: int | None = None) -> Job | None:
        """Keep ``job``, just finished; returns the record no longer kept, if any (at most one:
        no more than ``keep`` were kept before). ``output_size``: its output's encoded size,
        when the caller has it (a small output and no log then need no weighing)."""
        self._finished.append(job)
        if output_size is not None and output_size < SMALL_OUTPUT and job.log is None:
            pass  # nothing to count: ``keep`` bounds it
        elif (job.state is JobState.SUCCEEDED and job.output is not None) or job.log is not None:
            self._weigh(job, output_size)
        if len(self._finished) <= self._keep:
            return None
        old = self._finished.popleft()
        if self._weighty and self._weighty[0] is old:  # finish order: the oldest if any
            self._weighty.popleft()
            self._kept_bytes -= old.output_bytes + old.log_bytes
        return old

    def add_run(self, jobs: list[Job], sizes: list[int]) -> list[Job]:
        """:meth:`add` each of ``jobs``, just finished in this order, without a log, their
        outputs' encoded sizes ``sizes``; the records no longer kept, oldest first. When every
        output is small nothing is weighed, so appending them all and then letting the oldest
        go keeps and drops exactly what adding them one at a time does."""
        if max(sizes, default=0) >= SMALL_OUTPUT:
            dropped = [self.add(job, size) for job, size in zip(jobs, sizes, strict=True)]
            return [old for old in dropped if old is not None]
        finished = self._finished
        finished.extend(jobs)
        excess = len(finished) - self._keep
        if excess <= 0:
            return []
        if not self._weighty:  # nothing kept is weighed: let the oldest go, in C
            return list(starmap(finished.popleft, repeat((), excess)))
        gone: list[Job] = []
        for _ in range(excess):
            old = finished.popleft()
            if self._weighty and self._weighty[0] is old:
                self._weighty.popleft()
                self._kept_bytes -= old.output_bytes + old.log_bytes
            gone.append(old)
        return gone

    def _weigh(self, job: Job, known_size: int | None) -> None:
        """Count a kept output and log against the byte budget; older ones give way to them."""
        size = 0
        if job.state is JobState.SUCCEEDED:
            size = output_size(job.output) if known_size is None else known_size
        job.output_bytes = size if size >= SMALL_OUTPUT else 0
        job.log_bytes = job.log.size if job.log is not None else 0
        if job.output_bytes + job.log_bytes < SMALL_OUTPUT:
            job.output_bytes = job.log_bytes = 0
            return
        self._weighty.append(job)
        self._kept_bytes += job.output_bytes + job.log_bytes
        while self._kept_bytes > self._keep_bytes:
            old = self._weighty.popleft()
            self._kept_bytes -= old.output_bytes + old.log_bytes
            if old.output_bytes:
                old.output, old.output_dropped, old.output_bytes = None, old.output_bytes, 0
            if old.log is not None:
                old.log.drop()  # its lines count as trimmed from now on
            old.log_bytes = 0


def output_size(output: Any) -> int:
    """Encoded size of an output in bytes; 0 for one that is surely small (no encoding)."""
    kind = type(output)
    if kind is int or kind is float or kind is bool or output is None:
        return 0
    if kind is str and len(output) < SMALL_OUTPUT // 6:  # JSON escapes at most 6x
        return 0
    try:
        return len(orjson.dumps(output))
    except (TypeError, orjson.JSONEncodeError):
        return 0  # the outbox repairs such a value; the validator keeps it from happening
