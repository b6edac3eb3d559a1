"""Commands that act on the whole cluster: submit, status, stats, cancel, define, schedule,
unschedule, ack.

``stepline serve`` on a node hands every command to :meth:`ClusterCommands.offer` first; what
it does not take (``ping``) goes to the ordinary dispatch.

**Submits share commits**, as with ``--state PATH`` (:mod:`stepline.store._pipeline`):
consecutive submits are validated and *staged*; anything else, and the end of each chunk of
input, *settles* them: one transaction inserts them all (ids from one sequence, so unique
across the cluster) and notifies ``stepline_jobs``, then each gets its ``accepted``, in order.
The job is not queued locally: any node claims it (:mod:`._claims`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
import psycopg

from .._errors import AlreadyFinished, CommandError, StoreFailed, UnknownJob
from ..engine._jobs import Job
from ..triggers._attach import Triggers
from ..wire._commands import (
    Ack,
    Cancel,
    Command,
    Define,
    Schedule,
    Shutdown,
    Stats,
    Status,
    Submit,
    Unschedule,
)
from ..wire._events import RequestId, error, reply
from ..wire._outbox import encode_event
from ._alerts import ack
from ._db import DatabaseUnavailable
from ._model import job_id, job_number, tagged
from ._schedules import schedule, unschedule
from ._sql import query
from ._submit import Staged, prepare

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["ClusterCommands", "cancel_outstanding", "submit_one"]

log = logging.getLogger("stepline")

MAX_STAGED: Final = 4096  # submits staged at most before settling


class ClusterCommands:
    """The command pipeline of a ``serve`` node (the same interface as ``SubmitPipeline``)."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._staged: list[Staged] = []

    async def offer(self, command: Command, request_id: RequestId) -> bool:
        """Handle a cluster command (True), or leave it to the ordinary dispatch (False)."""
        if isinstance(command, Submit):
            await self._stage(command, request_id)
            return True
        handler = _HANDLERS.get(type(command))
        if handler is None:
            return False
        await self.settle()
        try:
            await handler(self._node, command, request_id)
        except CommandError as exc:
            self._node.stream.emit(error(exc.code, exc.message, request_id))
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self._node.stream.emit(error("store_failed", f"database: {exc}", request_id))
        return True

    async def _stage(self, command: Submit, request_id: RequestId) -> None:
        try:
            staged = await prepare(
                self._node, command.job, command.template, command.params, command.name,
                request_id, {},
            )  # fmt: skip
        except CommandError as exc:
            await self.settle()  # the earlier submits' `accepted` come first
            self._node.stream.emit(error(exc.code, exc.message, request_id))
            return
        self._staged.append(staged)
        if len(self._staged) >= MAX_STAGED:
            await self.settle()

    async def settle(self) -> None:
        """Insert everything staged in one transaction, then answer each in order."""
        if not self._staged:
            return
        staged, self._staged = self._staged, []
        try:
            await _insert_and_accept(self._node, staged)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            for item in staged:
                message = f"job not accepted: the database: {exc}"
                self._node.stream.emit(error(StoreFailed.code, message, item.request_id))


async def submit_one(
    node: ClusterNode,
    job: Any,
    template: str | None,
    params: Mapping[str, Any] | None,
    name: str | None,
    request_id: RequestId,
    extra: dict[str, Any],
) -> Job:
    """One submit from inside the process (a schedule's firing): staged and settled alone.

    Returns a record of the job as this node sees it: queued; it runs wherever it is claimed.
    """
    staged = await prepare(node, job, template, params, name, request_id, extra)
    try:
        (number,) = await _insert_and_accept(node, [staged])
    except (DatabaseUnavailable, psycopg.Error) as exc:
        raise StoreFailed(f"job not accepted: the database: {exc}") from None
    spec = node.executor.validate(job, template, params)
    return Job(id=job_id(number), spec=spec, name=name)


async def _insert_and_accept(node: ClusterNode, staged: list[Staged]) -> list[int]:
    """Insert the staged jobs and write their ``accepted``, holding the delivery lock.

    Once the insert commits, another node may claim a job and route its ``started`` here;
    delivery takes the lock to write it, so it cannot overtake the ``accepted`` written
    after the commit returns (awaiting the database lets other tasks run in between).
    """
    async with node.delivery_lock:
        numbers = await _insert(node, staged)
        for item, number in zip(staged, numbers, strict=True):
            node.stream.emit(_accepted(node, item, number))
    return numbers


async def _insert(node: ClusterNode, staged: list[Staged]) -> list[int]:
    rows = await node.commands_conn.run_one(
        query("submit_jobs"),
        {"node": node.id, "names": [s.name for s in staged],
         "requests": [s.request for s in staged]},
    )  # fmt: skip
    numbers = [int(row[0]) for row in rows]
    node.outstanding.update(job_id(n) for n in numbers)
    return numbers


def _accepted(node: ClusterNode, item: Staged, number: int) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "accepted", "ts": time.time(), "job": job_id(number)}
    event.update(item.extra)
    if item.request_id is not None:
        event["id"] = item.request_id
    return event


# -- status, stats, cancel, define -----------------------------------------------------------


async def _status(node: ClusterNode, cmd: Status, rid: RequestId) -> None:
    number = None if cmd.job is None else job_number(cmd.job)
    rows = await node.commands_conn.run(
        lambda c: c.execute(query("status"), {"job": number}).fetchall()
    )
    if cmd.job is not None and not rows:
        raise UnknownJob(f"unknown job {cmd.job!r}")
    extra = Triggers.of(node.executor).status() if cmd.job is None else {}
    if cmd.job is None:
        extra["alerts"] = await node.alerts.read_open(node.commands_conn)
        extra["schedules"] = await node.schedules.records(node.commands_conn)
    node.stream.emit(reply("status", rid, jobs=[_record(*row) for row in rows], **extra))


def _record(
    number: int, name: str | None, state: str, created: Any, started: Any, ended: Any,
    elapsed: float | None, running_for: Any, result: bytes | None, stopping: bool,
) -> dict[str, Any]:  # fmt: skip
    record: dict[str, Any] = {"job": job_id(number), "state": state, "name": name}
    if state == "running":
        record["elapsed"] = float(running_for or 0.0)
    else:
        record["elapsed"] = float(elapsed or 0.0)
    record["created"] = float(created)
    record["started"] = None if started is None else float(started)
    record["ended"] = None if ended is None else float(ended)
    if result is not None:
        value = orjson.loads(result)
        record["output" if state == "succeeded" else "error"] = value
    if stopping and state == "running":
        record["stopping"] = True
    return record


async def _stats(node: ClusterNode, cmd: Stats, rid: RequestId) -> None:
    def read(conn: Any) -> tuple[list[Any], int, int]:
        rows = conn.execute(query("counts")).fetchall()
        (nodes,) = conn.execute(query("live_nodes")).fetchone()
        schedules = len(conn.execute(query("live_schedules")).fetchall())
        return rows, int(nodes), schedules

    rows, nodes, schedules = await node.commands_conn.run(read)
    alerts = await node.alerts.read_open(node.commands_conn)
    counts = {"queued": 0, "running": 0}
    finished = dict.fromkeys(("succeeded", "failed", "cancelled", "timed_out"), 0)
    for state, count in rows:
        key = state.removeprefix("pruned:")
        if key in counts:
            counts[key] += int(count)
        elif key in finished:
            finished[key] += int(count)
    config = node.executor.config
    node.stream.emit(
        reply("stats", rid, **counts, finished=finished, workers=config.workers,
              queue_size=config.queue_size, nodes=nodes, node=node.id,
              **{**Triggers.of(node.executor).stats(), "schedules": schedules,
                   "alerts": alerts})
    )  # fmt: skip


async def _cancel(node: ClusterNode, cmd: Cancel, rid: RequestId) -> None:
    number = job_number(cmd.job)
    outcome = await node.commands_conn.run(functools.partial(_cancel_in, node=node, number=number))
    node.stream.emit(reply("cancelling", rid, job=cmd.job))
    if isinstance(outcome, dict):  # a queued job submitted here: its finished, after the reply
        node.delivered(outcome)


_CANCELLED_QUEUED = {"type": "cancelled", "message": "cancelled by request", "step": ""}


def _cancel_in(conn: Any, *, node: ClusterNode, number: int) -> dict[str, Any] | None:
    """Cancel in one transaction: a queued job ends here; a running one's owner is told."""
    error_data = orjson.dumps(_CANCELLED_QUEUED)
    row = conn.execute(query("cancel_queued"), {"job": number, "error": error_data}).fetchone()
    if row is not None:
        finished = {"event": "finished", "ts": time.time(), "job": job_id(number),
                    "state": "cancelled", "elapsed": 0.0, "error": _CANCELLED_QUEUED}  # fmt: skip
        submitter, request = row
        tagged(finished, request)
        if submitter == node.id:
            return finished
        conn.execute(
            query("forward_events"), {"submitters": [submitter], "bodies": [encode_event(finished)]}
        )
        conn.execute(query("notify_nodes"), {"nodes": [submitter], "payload": "events"})
        return None
    row = conn.execute(query("cancel_running"), {"job": number}).fetchone()
    if row is not None:
        conn.execute(query("notify_nodes"), {"nodes": [row[0]], "payload": f"cancel j{number}"})
        return None
    state = conn.execute(query("job_state"), {"job": number}).fetchone()
    if state is None:
        raise UnknownJob(f"unknown job 'j{number}'")
    raise AlreadyFinished(f"job j{number} already finished ({state[0]})")


async def _define(node: ClusterNode, cmd: Define, rid: RequestId) -> None:
    node.executor.define(cmd.name, cmd.job)  # validates; records it as pending
    await node.sync()
    node.stream.emit(reply("defined", rid, template=cmd.name))


async def _shutdown(node: ClusterNode, cmd: Shutdown, rid: RequestId) -> None:
    node.stream.emit(reply("shutting_down", rid, mode=cmd.mode))
    if cmd.mode == "drain":
        await node.wait_submitted()  # this node may be the one that runs them: keep claiming
    node.executor.shutdown(cmd.mode)


async def cancel_outstanding(node: ClusterNode) -> None:
    """A cancelling shutdown: cancel, wherever they are, the jobs submitted here."""
    for wire_id in sorted(node.outstanding):
        number = job_number(wire_id)
        try:
            outcome = await node.commands_conn.run(
                functools.partial(_cancel_in, node=node, number=number)
            )
        except (CommandError, DatabaseUnavailable, psycopg.Error) as exc:
            log.debug("cancel of %s at shutdown: %s", wire_id, exc)
            continue
        if isinstance(outcome, dict):
            node.delivered(outcome)


_HANDLERS: dict[type, Any] = {
    Status: _status,
    Stats: _stats,
    Cancel: _cancel,
    Define: _define,
    Shutdown: _shutdown,
    Ack: ack,
    Schedule: schedule,
    Unschedule: unschedule,
}
