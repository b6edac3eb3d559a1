"""Leases: a node proves it is alive by renewing its row; others rescue the jobs of one that
stopped renewing.

**Renewal.** Every ``lease / 4`` seconds a node pushes its row's ``expires`` to ``now() +
lease``. The renewal succeeds only while the row has not expired: once others may have taken
its jobs back, a node cannot quietly carry on. A node that cannot renew (its row expired, or no
answer from the database for ``LOST_AFTER`` of the lease) *loses its lease*: it stops every job
it holds and writes none of their outcomes (:meth:`ClusterNode.lose_lease`); its outcomes would
be refused anyway (fencing, :mod:`._writer`).

**Rescue.** Every node, every ``min(1 s, lease / 4)``, looks for running jobs whose owner's row
expired or is gone (``stuck_jobs``, ``FOR UPDATE SKIP LOCKED``: two rescuers never take the
same job). Under ``--on-restart rerun`` such a job is queued again, at most
:data:`~._node.MAX_RESCUES` times; under ``fail``, or past that bound, it finishes ``failed``
with error type ``interrupted``. Either way its submitter is told in the same transaction: a
``recovered`` event (``action``: ``rerun`` or ``failed``), and for a failed job its
``finished``. The same pass prunes finished jobs beyond ``--keep``, and forgets rows of nodes
dead for longer than a lease and the events no live node will read.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
import psycopg
import trio

from ..wire._outbox import encode_event
from ._db import Connection, DatabaseUnavailable
from ._model import job_id, tagged
from ._sql import query

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["keep_lease", "rescue"]

log = logging.getLogger("stepline")

LOST_AFTER: Final = 0.75
"""Share of the lease without a successful renewal after which a node stops its jobs itself,
before any other node may rescue them (at 1.0)."""

_CLEANUP_EVERY: Final = 10.0  # seconds between passes that forget dead nodes' leftovers


async def keep_lease(node: ClusterNode) -> None:
    """The node's renewal task (see the module docstring); it makes the node lose its lease
    when a renewal is refused or no answer came for ``LOST_AFTER`` of it."""
    conn = Connection(node.url, f"lease-{node.id}")
    renewed = trio.current_time()
    try:
        while True:
            await trio.sleep(node.lease / 4)
            try:
                with trio.fail_after(node.lease * LOST_AFTER):
                    row = await conn.run(
                        lambda c: c.execute(
                            query("renew_node"), {"node": node.id, "lease": node.lease}
                        ).fetchone()
                    )
            except (DatabaseUnavailable, psycopg.Error, trio.TooSlowError) as exc:
                log.warning("%s cannot renew its lease: %s", node.description, exc or "no answer")
                if trio.current_time() - renewed >= node.lease * LOST_AFTER:
                    node.lose_lease("no answer from the database")
                continue
            if row is None:
                node.lose_lease("its lease expired and its jobs were rescued")
                return
            renewed = trio.current_time()
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()


async def rescue(node: ClusterNode) -> None:
    """The node's rescue task: a pass every ``min(1 s, lease / 4)``; a pass that fails (the
    database away) is logged and the next one tries again."""
    conn = Connection(node.url, f"rescue-{node.id}")
    keep = node.executor.config.keep
    last_cleanup = -_CLEANUP_EVERY
    try:
        while True:
            await trio.sleep(min(1.0, node.lease / 4))
            cleanup = trio.current_time() - last_cleanup >= _CLEANUP_EVERY
            try:
                rescued = await conn.run(
                    functools.partial(_rescue_pass, node=node, keep=keep, cleanup=cleanup)
                )
            except (DatabaseUnavailable, psycopg.Error) as exc:
                log.warning("rescue pass failed: %s", exc)
                continue
            if cleanup:
                last_cleanup = trio.current_time()
            if rescued:
                log.warning("rescued %d jobs of dead nodes", rescued)
    finally:
        with trio.CancelScope(shield=True):
            await conn.aclose()


def _rescue_pass(conn: Any, *, node: ClusterNode, keep: int, cleanup: bool) -> int:
    """One pass in one transaction: rescue the stuck jobs, prune, and now and then forget dead
    nodes' leftovers. Returns how many jobs it rescued."""
    stuck = conn.execute(query("stuck_jobs")).fetchall()
    _write_rescue(conn, plan_rescue(stuck, node.on_restart))
    conn.execute(query("prune"), {"keep": keep})
    if cleanup:
        conn.execute(query("forget_dead_nodes"), {"grace": node.lease})
        conn.execute(query("forget_orphan_events"))
    return len(stuck)


@attrs.define
class Rescue:
    """What a pass does with the stuck jobs it found, decided before anything is written."""

    rerun: list[int] = attrs.Factory(list)
    """Jobs queued again."""
    failed: list[tuple[int, float, bytes]] = attrs.Factory(list)
    """Jobs finished ``failed``: (number, elapsed, the error as JSON)."""
    events: list[tuple[int, bytes]] = attrs.Factory(list)
    """(submitter node, event line) for each submitter to be told: ``recovered``, and a
    failed job's ``finished``."""


def plan_rescue(stuck: Iterable[Sequence[Any]], on_restart: str) -> Rescue:
    """The rescue of ``stuck`` rows ``(number, submitter, owner, rescues, elapsed, request)``
    under ``--on-restart on_restart``: rerun while rescues are left, else fail ``interrupted``."""
    from ._node import MAX_RESCUES

    plan = Rescue()
    for number, submitter, owner, rescues, elapsed, request in stuck:
        wire = job_id(number)
        if on_restart == "rerun" and rescues < MAX_RESCUES:
            plan.rerun.append(number)
            plan.events.append((submitter, _recovered(wire, owner, "rerun", request)))
            continue
        why = (
            f"node {owner} stopped while the job was running"
            + (" (--on-restart fail)" if on_restart == "fail" else "")
            + ("" if rescues < MAX_RESCUES else f"; rescued {rescues} times already")
        )
        error = {"type": "interrupted", "message": why, "step": ""}
        seconds = float(elapsed or 0.0)
        plan.failed.append((number, seconds, orjson.dumps(error)))
        plan.events.append((submitter, _recovered(wire, owner, "failed", request)))
        finished = {"event": "finished", "ts": time.time(), "job": wire, "state": "failed",
                    "elapsed": seconds, "error": error}  # fmt: skip
        plan.events.append((submitter, encode_event(tagged(finished, request))))
    return plan


def _write_rescue(conn: Any, plan: Rescue) -> None:
    """Requeue, fail and tell, and wake the nodes concerned."""
    if plan.rerun:
        conn.execute(query("requeue_jobs"), {"ids": plan.rerun})
        conn.execute(query("notify"), {"channel": "stepline_jobs", "payload": "rescued"})
    if plan.failed:
        conn.execute(
            query("fail_jobs"),
            {"ids": [f[0] for f in plan.failed], "elapsed": [f[1] for f in plan.failed],
             "errors": [f[2] for f in plan.failed]},
        )  # fmt: skip
    if plan.events:
        conn.execute(
            query("forward_events"),
            {"submitters": [s for s, _ in plan.events], "bodies": [b for _, b in plan.events]},
        )
        targets = sorted({s for s, _ in plan.events})
        conn.execute(query("notify_nodes"), {"nodes": targets, "payload": "events"})


def _recovered(wire: str, owner: int | None, action: str, request: bytes) -> bytes:
    recovered = {"event": "recovered", "ts": time.time(), "job": wire, "state": "running",
                 "action": action, "node": owner}  # fmt: skip
    return encode_event(tagged(recovered, request))
