"""Claiming jobs from the shared queue, and stopping claimed jobs cancelled from elsewhere.

**Claims are batched.** One ``claim`` statement takes up to as many queued jobs as this node has
room for (its workers, plus an allowance waiting in its local queue so that a worker never
idles while a claim is on its way), ``FOR UPDATE SKIP LOCKED``: nodes claiming at once take
different jobs and never wait for each other. The allowance starts at the number of workers
and doubles while short jobs leave the workers waiting for claims (:meth:`Claimer._adapt`), so
a stream of trivial jobs is claimed in large batches, while long jobs are never hoarded by one
node. A job that ended here frees its room at once: the commit of its outcome is not waited
for (it holds its claim until then, for fencing and routing, bounded by :data:`HELD_MAX`).

A claimed job is validated again from its stored request (as after a restart: the templates it
used travel with it) and put in the executor's queue; from then on it is an ordinary job of this
executor.

**Wake-ups.** The claimer claims again as soon as it has room and either a ``stepline_jobs``
notification arrived or the poll interval passed; a full batch means more may be waiting, so it
claims again at once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

import orjson
import psycopg
import trio

from .._errors import CommandError
from ..engine._executor import ExecutorState
from ..spec._model import JobSpec
from ..spec._policy import check_run_policy
from ..spec._validate import validate_job
from ..store._decode import Corrupt, decode_json
from ..wire._events import RequestId
from ._db import Connection, DatabaseUnavailable
from ._delivery import deliver_now
from ._model import Claim, Outcome, job_id
from ._sql import query

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["Claimer"]

log = logging.getLogger("stepline")

HELD_MAX: Final = 4096
"""Claims a node holds at most, counting jobs ended here whose outcome is not committed yet."""

AHEAD_MAX: Final = 512
"""Claimed jobs waiting for a worker at most, however short the jobs (:meth:`Claimer._adapt`)."""


class Claimer:
    """Keeps the executor's queue fed from ``stepline_jobs``."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._conn = Connection(node.url, f"claim-{node.id}")
        config = node.executor.config
        self._workers = config.workers
        self._base = min(config.workers, config.queue_size)  # jobs waiting beyond the workers
        self._ahead = self._base
        self._was_full = False

    def room(self) -> int:
        """Jobs to claim now: this node's workers and its allowance to wait, less the claims
        whose jobs have not ended here (an ended job's outcome may still be on its way: its
        claim is held, but the job takes no worker), bounded by the local queue's free slots and
        by :data:`HELD_MAX`."""
        node, queue = self._node, self._node.executor.queue
        unfinished = len(node.claims) - node.writer.holding
        return min(
            self._workers + self._ahead - unfinished,
            queue.size - len(queue),
            HELD_MAX - len(node.claims),
        )

    def _adapt(self, asked: int, got: int) -> None:
        """Claim further ahead while short jobs starve the workers; back to the base otherwise.

        A full claim after a full claim, returned when every job claimed before has already
        ended here, means the workers waited for the database: the allowance doubles (up to the
        local queue's size and :data:`AHEAD_MAX`). A claim that was not full (the table ran
        dry) resets it. Long jobs never double it: a worker that ends one takes the next waiting
        one, so the claims are never all ended when a claim returns.
        """
        node = self._node
        full = got == asked
        if not full:
            self._ahead = self._base
        elif self._was_full and len(node.claims) == node.writer.holding:
            limit = min(node.executor.config.queue_size, AHEAD_MAX)
            self._ahead = max(self._ahead, min(2 * self._ahead, limit))
        self._was_full = full

    async def run(self) -> None:
        node = self._node
        try:
            while True:
                if not node.claiming or node.executor.state is not ExecutorState.RUNNING:
                    return
                room = self.room()
                if room <= 0:
                    await node.wakes["room"].wait()
                    continue
                rows = await self._claim(room)
                self._adapt(room, len(rows))
                if any(self._announced_elsewhere(row) for row in rows):
                    # Or a submit of ours whose commit this claim saw before the submitting
                    # task ran again: let it record the job first; deliver only if it is not.
                    await trio.lowlevel.checkpoint()
                    if any(self._announced_elsewhere(row) for row in rows):
                        await deliver_now(node, self._conn)
                for row in rows:
                    self._take(*row)
                if len(rows) < room:
                    await node.wakes["jobs"].wait(node.poll)
        finally:
            with trio.CancelScope(shield=True):
                await self._conn.aclose()

    def _announced_elsewhere(self, row: tuple[Any, ...]) -> bool:
        """A job of ours whose last event came through the table: a schedule's firing (its
        ``accepted``) or a rescue (its ``recovered``). Those rows were committed before this
        claim, so delivering what is pending puts them on stdout before its ``started``."""
        number, submitter, rescues = row[0], row[3], row[5]
        node = self._node
        return submitter == node.id and (rescues > 0 or job_id(number) not in node.outstanding)

    async def _claim(self, n: int) -> list[Any]:
        node = self._node
        try:
            return await self._conn.run_one(query("claim"), {"node": node.id, "n": n})
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("cannot claim jobs: %s", exc)
            await trio.sleep(node.poll)
            return []

    def _take(
        self, number: int, name: str | None, request: bytes, submitter: int, attempt: int,
        rescues: int,
    ) -> None:  # fmt: skip
        node, executor = self._node, self._node.executor
        claim = Claim(number, submitter, attempt)
        wire_id = job_id(number)
        node.claims[wire_id] = claim
        request_id: RequestId = None
        try:
            stored = decode_json(bytes(request), "the stored request")
            request_id = stored.get("id")
            spec = self._validate(stored)
        except (CommandError, Corrupt, KeyError, TypeError, AttributeError) as exc:
            message = exc.message if isinstance(exc, CommandError) else str(exc)
            why = f"the job could not be run on node {node.id}: {message}"
            _fail_at_once(node, claim, why, request_id)
            return
        # Its events carry the submit's `id`, as in one process; its `accepted` is dropped.
        job = executor.table.accept(spec, name=name, job_id=wire_id, request_id=request_id)
        executor.queue.put_nowait(job)  # room was counted: claims never exceed the capacity

    def _validate(self, request: dict[str, Any]) -> JobSpec:
        templates = {**self._node.executor.templates, **(request.get("templates") or {})}
        spec = validate_job(request["job"], params=request.get("params"), templates=templates)
        check_run_policy(spec, self._node.executor.config.allow_run)
        return spec

    async def watch_cancels(self) -> None:
        """Cancel the claimed jobs that a ``cancel`` on any node asked to stop."""
        node = self._node
        conn = Connection(node.url, f"cancels-{node.id}")
        try:
            while True:
                await node.wakes["cancels"].wait(node.poll)
                if not node.claims:
                    continue
                try:
                    rows = await conn.run(
                        lambda c: c.execute(query("cancels_for"), {"node": node.id}).fetchall()
                    )
                except (DatabaseUnavailable, psycopg.Error) as exc:
                    log.warning("cannot read cancel requests: %s", exc)
                    continue
                for number, attempt in rows:
                    self._cancel(job_id(number), attempt)
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()

    def _cancel(self, wire_id: str, attempt: int) -> None:
        claim = self._node.claims.get(wire_id)
        if claim is None or claim.attempt != attempt:
            return
        table = self._node.executor.table
        table.cancel(table.get(wire_id), "cancelled by request")


def _fail_at_once(node: ClusterNode, claim: Claim, message: str, request_id: RequestId) -> None:
    error = {"type": "interrupted", "message": message, "step": ""}
    event = {"event": "finished", "ts": time.time(), "job": job_id(claim.number),
             "state": "failed", "elapsed": 0.0, "error": error}  # fmt: skip
    if request_id is not None:
        event["id"] = request_id
    node.writer.finish(Outcome(claim, "failed", 0.0, orjson.dumps(error), event))
