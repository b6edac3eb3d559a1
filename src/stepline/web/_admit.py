"""The executor's side of ``POST /jobs``: a batch of submit lines admitted as stdin admits them.

The front's process has checked each body (``web/_submits.py``) and sends the submits as the
protocol lines a stdin driver would write, many to a frame. Here they take the stdin reader's
path: a plain submit is decoded by :func:`~stepline.wire._plain.decode_plain_submit` and
admitted by :meth:`Executor.submit_nowait <stepline.engine._executor.Executor.submit_nowait>`
(no coroutine, no task, a bare value job completed on the spot), anything else by the strict
decoder and the same method; the job gets its id from the same table, and ``accepted`` goes to
stdout as for any submit without an ``id``. What would wait (a full queue, ``--state``'s
commit) waits in :meth:`Executor.submit <stepline.engine._executor.Executor.submit>`, and the
batch's answer with it: a full queue holds the callers, never a buffer. Refusals are the
executor's own (``invalid_job``, ``unknown_template``, ``shutting_down``, ...), answered to
the HTTP caller, as before, and not written on stdout (no stdin command asked).
"""

from __future__ import annotations

import logging
from collections import Counter

import trio

from .._errors import CommandError
from ..engine._executor import Executor
from ..wire._commands import CommandRefused, Submit, decode_command
from ..wire._plain import decode_plain_submit
from ._errors import status_of
from ._metrics import Metrics
from ._share import LoopShare

__all__ = ["Admission"]

log = logging.getLogger("stepline")

Result = str | list[str]  # the job's id, or the refusal's [code, message]


class Admission:
    """Admits the front's batches of submit lines on one executor."""

    def __init__(self, executor: Executor, share: LoopShare, metrics: Metrics) -> None:
        self._executor = executor
        self._share = share
        self._metrics = metrics

    async def admit(self, lines: list[bytes], answered: dict[str, int]) -> list[Result]:
        """Each line's job id or refusal, in order. ``answered``: the statuses the front's
        process answered itself since its last batch (counted in the metrics here)."""
        statuses: Counter[int] = Counter({int(k): v for k, v in answered.items()})
        results: list[Result] = []
        if lines:
            await self._share.turn()  # one turn a batch: the front's share of the loop
            with self._share.submitting():
                waits = self._admit_nowait(lines, results)
                if waits < len(lines):
                    await self._admit_waiting(lines[waits:], results)
        for result in results:
            statuses[202 if isinstance(result, str) else status_of(result[0])] += 1
        self._metrics.answered_many(statuses)
        return results

    def _admit_nowait(self, lines: list[bytes], results: list[Result]) -> int:
        """Admit lines in order while none needs waiting; how many were."""
        executor = self._executor
        for index, line in enumerate(lines):
            try:
                plain = decode_plain_submit(line)
                if plain is not None:
                    job = executor.submit_nowait(plain.job, name=plain.name)
                else:
                    cmd = _submit(line)
                    job = executor.submit_nowait(
                        cmd.job, template=cmd.template, params=cmd.params, name=cmd.name
                    )
            except trio.WouldBlock:
                return index
            except Exception as exc:
                results.append(_refused(exc))
                continue
            results.append(job.id)
        return len(lines)

    async def _admit_waiting(self, lines: list[bytes], results: list[Result]) -> None:
        """The rest of a batch, once one of its submits must wait: for room in the queue one
        after another, so that they are admitted in the order they came; with ``--state``, for
        their records' commit, all at once, so that they share commits as the stdin reader's
        do. The batch is answered when the last is admitted or refused."""
        if self._executor.durable is None:
            for line in lines:
                results.append(await self._admit_one(line))
            return
        waiting: list[Result] = [[]] * len(lines)

        async def admit_one(index: int, line: bytes) -> None:
            waiting[index] = await self._admit_one(line)

        async with trio.open_nursery() as nursery:
            for index, line in enumerate(lines):
                nursery.start_soon(admit_one, index, line)
        results += waiting

    async def _admit_one(self, line: bytes) -> Result:
        try:
            cmd = _submit(line)
            job = await self._executor.submit(
                cmd.job, template=cmd.template, params=cmd.params, name=cmd.name
            )
        except Exception as exc:
            return _refused(exc)
        return job.id


def _submit(line: bytes) -> Submit:
    """The strict decoder's ``submit`` (the front's process made the line and checked it)."""
    command, _ = decode_command(line)
    assert isinstance(command, Submit)
    return command


def _refused(exc: Exception) -> list[str]:
    if isinstance(exc, CommandError):
        return [exc.code, exc.message]
    if isinstance(exc, CommandRefused):
        return [exc.error.code, exc.error.message]
    log.exception("internal error admitting a submit from HTTP", exc_info=exc)
    return ["internal", f"internal error: {type(exc).__name__}: {exc}"]
