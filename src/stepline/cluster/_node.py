"""A node: one stepline process sharing a PostgreSQL queue with any number of others.

A node is an ordinary :class:`~stepline.engine._executor.Executor` with a
:class:`ClusterNode` attached to it in two ways (the engine's own seams, nothing special):

* as its durable state (:class:`~stepline.engine._durable.DurableState`): the node sees each
  claimed job finish and writes the outcome, fenced (:mod:`stepline.cluster._writer`);
* as an attachment (:class:`~stepline.engine._attach.Attachment`): the node's tasks run beside
  the workers and hear of the shutdown.

Its tasks: the listener (:mod:`._listen`), the claimer feeding the executor's queue and the
cancel watcher (:mod:`._claims`), the writer (:mod:`._writer`), the lease keeper and the rescuer
(:mod:`._lease`), and the delivery of events for jobs submitted here (:mod:`._delivery`).
Commands from this node's driver that act on the whole cluster are :mod:`._commands`.

A job is submitted into ``stepline_jobs`` (never into the local queue); any node, this one
included, claims it. So every job a node runs is a claim, and every job it submitted is
*outstanding* until its ``finished`` reached this node's stdout.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson
import psycopg
import trio

from ..engine._attach import ShutdownMode
from ..engine._jobs import Job, JobState
from ..triggers._attach import Triggers
from ..wire._events import Event, RequestId
from ..wire._outbox import StreamOutbox
from ._alerts import ClusterAlerts
from ._db import Connection, DatabaseUnavailable, connect
from ._delivery import deliver_now
from ._listen import Listener
from ._model import Claim, Outcome
from ._schedules import ClusterSchedules, forget_own_schedules
from ._sql import SCHEMA_VERSION, query, schema
from ._wake import Wake
from ._writer import RoutingOutbox, Writer

if TYPE_CHECKING:
    from ..engine._executor import Executor
    from ._commands import ClusterCommands

__all__ = ["ClusterError", "ClusterNode", "RestartPolicy"]

log = logging.getLogger("stepline")

RestartPolicy = Literal["rerun", "fail"]

MAX_RESCUES = 3
"""Times one job may be taken back from a dead node before it is failed: a job that kills its
node must not go on to kill every node of the cluster."""

ENDED_KEPT = 10_000
"""Ended jobs of other nodes' drivers remembered, for the events their callbacks emit later."""

_SCHEMA_LOCK = 0x5751_0001  # advisory lock id: nodes starting together create the schema once


class ClusterError(Exception):
    """The database cannot be used as a cluster's (unreachable, foreign format): at start only."""


class ClusterNode:
    """This process's membership of the cluster. :meth:`open`, then :meth:`route` and
    :meth:`attach` to an executor, which runs it."""

    write_ahead_start = False  # a claim is durable before the job reaches a worker

    def __init__(
        self,
        url: str,
        node_id: int,
        *,
        lease: float,
        poll: float,
        poll_only: bool,
        on_restart: RestartPolicy,
    ) -> None:
        self.url = url
        self.id = node_id
        self.lease = lease
        self.poll = poll
        self.poll_only = poll_only
        self.on_restart = on_restart
        self.claims: dict[str, Claim] = {}  # jobs this node holds, by wire id
        # Jobs run here for another node's driver, ended recently: their callbacks' events
        # (`callback`, `notification`) come after the claim ended and still go to it.
        self.ended_for: OrderedDict[str, int] = OrderedDict()
        self.outstanding: set[str] = set()  # jobs submitted here whose `finished` is not out yet
        self.lease_lost = False
        self.wakes = {
            name: Wake() for name in ("jobs", "events", "cancels", "templates", "schedules", "room")
        }
        self.settled = Wake()  # an outstanding job finished
        self.delivery_lock = trio.Lock()  # one batch of events taken and written at a time
        self.writer = Writer(self, Connection(url, f"write-{node_id}"))
        self.commands_conn = Connection(url, f"commands-{node_id}")
        self._stream: StreamOutbox | None = None
        self._executor: Executor | None = None
        self._shutdown: ShutdownMode | None = None
        self.template_version = 0
        self.pending_templates: list[tuple[str, bytes]] = []  # defined, not yet written
        self.listener: Listener | None = None
        self.schedules = ClusterSchedules(self)
        self.first_alert_id = 0  # the first of the block of alert ids reserved at join
        self._alerts: ClusterAlerts | None = None
        self._schedules_ended = False

    # -- start -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        lease: float = 10.0,
        poll: float = 1.0,
        poll_only: bool = False,
        on_restart: RestartPolicy = "rerun",
    ) -> ClusterNode:
        """Create the tables if needed, check their format, and join; raises ClusterError."""
        try:
            node_id, alert_ids = await trio.to_thread.run_sync(_join, url, lease)
        except DatabaseUnavailable as exc:
            raise ClusterError(str(exc)) from None
        except psycopg.Error as exc:
            raise ClusterError(f"cannot use the database {_safe(url)}: {exc}") from None
        node = cls(url, node_id, lease=lease, poll=poll, poll_only=poll_only,
                   on_restart=on_restart)  # fmt: skip
        node.first_alert_id = alert_ids
        return node

    @property
    def description(self) -> str:
        return f"node {self.id} of {_safe(self.url)}"

    def route(self, stream: StreamOutbox) -> RoutingOutbox:
        """The outbox an executor on this node writes to (see :mod:`._writer`)."""
        self._stream = stream
        return RoutingOutbox(self, stream)

    def attach(self, executor: Executor) -> None:
        """Run on ``executor``: its durable state, an attachment, and where its alerts live
        (its triggers must be attached already)."""
        executor.use_durable_state(self)
        executor.attach(self)
        self._executor = executor
        self._alerts = ClusterAlerts(self, executor.config.alert_repeat, self.first_alert_id)
        Triggers.of(executor).use_alerts(self._alerts)

    @property
    def alerts(self) -> ClusterAlerts:
        assert self._alerts is not None, "attach() first"
        return self._alerts

    @property
    def executor(self) -> Executor:
        assert self._executor is not None, "attach() first"
        return self._executor

    @property
    def stream(self) -> StreamOutbox:
        assert self._stream is not None, "route() first"
        return self._stream

    def commands(self) -> ClusterCommands:
        from ._commands import ClusterCommands

        return ClusterCommands(self)

    # -- the attachment: tasks beside the workers ---------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from ._claims import Claimer
        from ._delivery import deliver
        from ._lease import keep_lease, rescue
        from ._templates import follow_templates

        try:
            async with trio.open_nursery() as nursery:
                if not self.poll_only:
                    self.listener = Listener(
                        self.url,
                        {
                            "stepline_jobs": [self.wakes["jobs"]],
                            f"stepline_n{self.id}": [self.wakes["events"], self.wakes["cancels"]],
                            "stepline_templates": [self.wakes["templates"]],
                            "stepline_schedules": [self.wakes["schedules"]],
                        },
                        check=max(self.lease / 4, 0.5),
                        purpose=f"listen-{self.id}",
                    )
                    await nursery.start(self.listener.run)
                nursery.start_soon(self.writer.run)
                nursery.start_soon(keep_lease, self)
                nursery.start_soon(rescue, self)
                nursery.start_soon(deliver, self)
                nursery.start_soon(follow_templates, self)
                nursery.start_soon(self.schedules.run)
                claimer = Claimer(self)
                nursery.start_soon(claimer.run)
                nursery.start_soon(claimer.watch_cancels)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._leave()

    def shutdown(self, mode: ShutdownMode) -> None:
        self._shutdown = mode
        self.wakes["room"].set()
        self.schedules.stop()  # schedules stop when shutdown begins, as in one process
        trio.lowlevel.spawn_system_task(self.end_schedules)
        if mode == "cancel" and self.outstanding:
            from ._commands import cancel_outstanding

            trio.lowlevel.spawn_system_task(cancel_outstanding, self)

    async def drain(self) -> None:
        """Every local job finished: wait for its outcome to be written and, after a cancel,
        for the jobs this node submitted to end elsewhere (bounded by the lease)."""
        if self._shutdown == "cancel":
            with trio.move_on_after(self.lease + 2 * self.poll):
                await self.wait_submitted()
        await self.writer.idle.wait()

    async def end_schedules(self) -> None:
        """Shutdown begins: this node's schedules end for every node (once), and the firings
        already announced in the table are delivered, so that they are waited for too."""
        self.schedules.stop()
        if self._schedules_ended:
            return
        self._schedules_ended = True
        await forget_own_schedules(self)
        try:
            await deliver_now(self, self.commands_conn)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("could not read this node's last events: %s", exc)

    async def wait_submitted(self) -> None:
        """Return once every job submitted here has had its ``finished`` delivered (its
        schedules end first: a live schedule would keep submitting)."""
        await self.end_schedules()
        while self.outstanding:
            await self.settled.wait(self.poll)

    @property
    def claiming(self) -> bool:
        return self._shutdown is None and not self.lease_lost

    async def _leave(self) -> None:
        try:
            await self.commands_conn.run(
                lambda c: c.execute(query("leave_node"), {"node": self.id})
            )
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("could not leave the cluster cleanly: %s", exc)
        await self.commands_conn.aclose()
        await self.writer.aclose()

    # -- what the claimer, the writer and the delivery call ----------------------------------

    def release(self, claim: Claim) -> None:
        """The claim ended (outcome written or dropped): room for another."""
        wire_id = f"j{claim.number}"
        if self.claims.pop(wire_id, None) is not None:
            self.wakes["room"].set()
        if claim.submitter != self.id:
            self.ended_for[wire_id] = claim.submitter
            if len(self.ended_for) > ENDED_KEPT:
                self.ended_for.popitem(last=False)

    def delivered(self, event: Event) -> None:
        """Write an event of a job submitted here on this node's stdout."""
        self.stream.emit(event)
        self._note(event)

    def delivered_line(self, line: bytes) -> None:
        """:meth:`delivered` for an event already encoded as a JSON line (read from the table):
        written as it is, decoded only to note what it ends."""
        self.stream.emit_line(line)
        self._note(orjson.loads(line))

    def _note(self, event: Event) -> None:
        if event.get("event") == "accepted":  # a schedule's firing, made by any node
            self.outstanding.add(str(event.get("job")))
        elif event.get("event") == "finished":
            self.outstanding.discard(str(event.get("job")))
            self.settled.set()

    def lose_lease(self, why: str) -> None:
        """Fencing, from this side: stop every job held, and never write their outcomes."""
        if self.lease_lost:
            return
        self.lease_lost = True
        log.error("%s lost its lease (%s): stopping its %d jobs", self.description, why,
                  len(self.claims))  # fmt: skip
        table = self.executor.table
        for wire_id in list(self.claims):
            table.cancel(table.get(wire_id), f"node {self.id} lost its lease ({why})")

    # -- DurableState ------------------------------------------------------------------------

    def on_started(self, job: Job, event: Event) -> None:
        """The claim already recorded the job as running: ``started`` goes out at once."""
        self.executor.outbox.emit(event)

    def on_cancelling(self, job: Job, event: Event) -> None:
        """Written at once, as without a store (the cancel itself goes through the database)."""
        self.executor.outbox.emit(event)

    def on_finished(self, job: Job, event: Event) -> None:
        claim = self.claims.get(job.id)
        if claim is None:  # not a claim (cannot happen on a node): never lose the event
            self.stream.emit(event)
            return
        result = job.output if job.state is JobState.SUCCEEDED else job.error
        data = _dumps(result)
        self.writer.finish(Outcome(claim, job.state.value, job.elapsed, data, event))

    async def submit(
        self,
        executor: Executor,
        job: Any,
        *,
        template: str | None,
        params: Mapping[str, Any] | None,
        name: str | None,
        request_id: RequestId,
        extra: dict[str, Any],
    ) -> Job:
        """A submit from inside the process (a schedule, an embedding program)."""
        from ._commands import submit_one

        return await submit_one(self, job, template, params, name, request_id, extra)

    def record_template(self, name: str, job: Any) -> None:
        self.pending_templates.append((name, orjson.dumps(job)))

    async def sync(self) -> None:
        from ._templates import write_templates

        await write_templates(self)

    async def wait_recorded(self) -> None:
        """Nothing waits: the claim is the record."""


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return orjson.dumps(value, default=str)


def _safe(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"


def _join(url: str, lease: float) -> tuple[int, int]:
    """Create the schema (once, under an advisory lock), check its version, register a node;
    returns its id and the first of the block of alert ids it reserved."""
    with connect(url, "join", autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(schema().encode())  # the file: trusted SQL, several statements
        conn.execute(
            "INSERT INTO stepline_meta VALUES ('version', %s) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )
        (version,) = conn.execute(
            "SELECT value FROM stepline_meta WHERE key = 'version'"
        ).fetchone() or (None,)
        if version != SCHEMA_VERSION:
            raise ClusterError(
                f"the database holds stepline tables of format {version}; "
                f"this stepline uses format {SCHEMA_VERSION}"
            )
        row = conn.execute(
            query("register_node"),
            {"host": socket.gethostname(), "pid": os.getpid(), "lease": lease},
        ).fetchone()
        assert row is not None
        block = conn.execute(query("reserve_alert_ids")).fetchone()
        assert block is not None
        return int(row[0]), int(block[0])
