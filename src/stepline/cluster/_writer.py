"""What a node writes about the jobs it runs: their events for other nodes, and their outcomes.

Every job this node claimed may have been submitted on another node, whose driver must see its
events. :class:`RoutingOutbox` sits between the executor and stdout: events of a job submitted
here go to stdout as usual; events of a job submitted elsewhere go into the :class:`Writer`'s
open batch, bound for ``stepline_events``; the ``accepted`` a claim causes is dropped (the
submitter announced the job already), and ``started`` says on which ``node`` the job runs.

**One writer, one connection, one order.** Forwarded events and outcomes of a batch are written
by one statement (one round trip), events first, in the order they were emitted, all those
bound for one node in one row. So a job's ``log`` lines
always precede its ``finished`` for the node that delivers them, whatever the batching.

**Fencing.** An outcome is written only if the job is still running under the attempt this node
claimed (``write_batch`` in ``queries.sql``). The ``finished`` event of a job submitted here is
emitted after that commit, and only if it counted: a node that lost its lease can never make
its driver, or anyone's, see a second ``finished``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import trio

from ..wire._events import Event
from ..wire._outbox import StreamOutbox, encode_event
from ._db import Connection, DatabaseUnavailable
from ._model import Outcome
from ._sql import query
from ._wake import Wake

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["RoutingOutbox", "Writer"]

log = logging.getLogger("stepline")

BACKLOG: Final = 20_000
"""Forwarded events waiting for their commit beyond which workers wait (bounded memory)."""

REPLIES: Final = frozenset(
    {"acked", "cancelling", "defined", "error", "logs", "pong", "scheduled", "shutting_down",
     "stats", "status", "unscheduled"}
)  # fmt: skip
"""Answers to this node's commands. They may name a job run here for another node's driver,
but they answer this node's driver; a job's own events carry its submit's ``id`` too, so the
``id`` cannot tell them apart."""

_RETRY: Final = 0.5  # seconds between attempts to write a batch while the database is away


class RoutingOutbox:
    """The executor's outbox on a node: stdout for jobs submitted here, the database otherwise."""

    def __init__(self, node: ClusterNode, stream: StreamOutbox) -> None:
        self._node = node
        self._stream = stream

    def emit(self, event: Event) -> None:
        job = event.get("job")
        claim = self._node.claims.get(job) if isinstance(job, str) else None
        reply = event["event"] in REPLIES  # about a job, maybe, but for this node's driver
        if claim is None or reply:
            submitter = self._node.ended_for.get(job) if isinstance(job, str) else None
            if submitter is not None and not reply:  # a callback's, after the end
                self._node.writer.forward(submitter, event)
            else:
                self._stream.emit(event)
            return
        if event["event"] == "accepted":
            return  # the claim's own acceptance: the submitter announced the job
        if event["event"] == "started":
            event["node"] = self._node.id  # where it runs: a rescued job starts elsewhere
        if claim.submitter == self._node.id:
            self._stream.emit(event)
        else:
            self._node.writer.forward(claim.submitter, event)

    @property
    def congested(self) -> bool:
        return self._stream.congested or self._node.writer.backlog >= BACKLOG

    async def wait_writable(self) -> None:
        await self._stream.wait_writable()
        while self._node.writer.backlog >= BACKLOG:
            await self._node.writer.written.wait()


class Writer:
    """Batches forwarded events and outcomes; commits one batch while the next fills."""

    def __init__(self, node: ClusterNode, conn: Connection) -> None:
        self._node = node
        self._conn = conn
        self._events: list[tuple[int, bytes]] = []
        self._outcomes: list[Outcome] = []
        self._dirty = Wake()
        self.written = Wake()  # set after each commit: for backlog waiters
        self.handed = 0  # events and outcomes handed to this writer so far
        self.holding = 0  # outcomes handed whose claim is not released yet
        self._committed = 0  # of those, how many are committed (or dropped, fenced)
        self._commit = trio.Event()  # set (and replaced) after each batch
        self.idle = trio.Event()
        self.idle.set()

    async def aclose(self) -> None:
        await self._conn.aclose()

    @property
    def backlog(self) -> int:
        return len(self._events)

    def forward(self, submitter: int, event: Event) -> None:
        self._events.append((submitter, encode_event(event)))
        self.handed += 1
        self._touch()

    def finish(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self.handed += 1
        self.holding += 1
        self._node.wakes["room"].set()  # the job no longer takes a worker: claim another
        self._touch()

    async def wait_committed(self, mark: int) -> None:
        """Return once the first ``mark`` items handed to this writer are written."""
        while self._committed < mark:
            await self._commit.wait()

    def _touch(self) -> None:
        if self.idle.is_set():
            self.idle = trio.Event()
        self._dirty.set()

    async def run(self) -> None:
        while True:
            if not self._events and not self._outcomes:
                self.idle.set()
                await self._dirty.wait()
                continue
            events, outcomes = self._events, self._outcomes
            self._events, self._outcomes = [], []
            mark = self.handed
            await self._write(events, outcomes)
            self._committed = mark
            self._commit.set()
            self._commit = trio.Event()
            self.written.set()

    async def _write(self, events: list[tuple[int, bytes]], outcomes: list[Outcome]) -> None:
        node = self._node
        while True:
            if node.lease_lost:
                self._dropped(outcomes, "this node lost its lease")
                return
            try:
                batch = _batch(node.id, events, outcomes)
                counted = await self._conn.run_one(query("write_batch"), batch)
                break
            except DatabaseUnavailable as exc:
                log.warning("cannot write job outcomes yet: %s", exc)
                await trio.sleep(_RETRY)
        ids = {row[0] for row in counted}
        fenced = [o for o in outcomes if o.claim.number not in ids]
        self._dropped(fenced, "the job is no longer this attempt's")
        for outcome in outcomes:
            if outcome.claim.number in ids:
                if outcome.claim.submitter == node.id:
                    node.delivered(outcome.event)
                self._release(outcome)

    def _dropped(self, outcomes: list[Outcome], why: str) -> None:
        for outcome in outcomes:
            log.warning(
                "job j%d: outcome of attempt %d dropped (%s)",
                outcome.claim.number,
                outcome.claim.attempt,
                why,
            )
            self._release(outcome)

    def _release(self, outcome: Outcome) -> None:
        self.holding -= 1
        self._node.release(outcome.claim)


def _batch(node: int, events: list[tuple[int, bytes]], outcomes: list[Outcome]) -> dict[str, Any]:
    """The parameters of ``write_batch``: forwarded events, then fenced outcomes, one statement
    (one round trip, its own transaction). Its rows: the jobs whose outcome counted."""
    return {
        "node": node,
        "submitters": [s for s, _ in events],
        "bodies": [b for _, b in events],
        "ids": [o.claim.number for o in outcomes],
        "attempts": [o.claim.attempt for o in outcomes],
        "states": [o.state for o in outcomes],
        "elapsed": [o.elapsed for o in outcomes],
        "results": [o.result for o in outcomes],
        "events": [encode_event(o.event) for o in outcomes],
    }
