"""Schedules across the cluster: made on any node, each slot fired once by whichever node wins it.

``schedule`` on a node writes the schedule into ``stepline_schedules`` (its *owner* is that
node: the firings are its submits, and their ``accepted``, ``schedule_skipped`` and every later
event reach its driver). Every node follows the table (a notification or the poll) and runs one
task per live schedule that waits for each slot and then tries to fire it.

**Once per slot, whatever the clocks and leases.** A slot is named by its time (milliseconds
since the epoch), which every node computes alike: a ``cron`` slot from the expression and zone,
an ``every`` slot as ``anchor + k * every`` where the anchor is the database's clock when the
schedule was made. Firing inserts ``(schedule, slot)`` into ``stepline_firings``, whose primary
key lets exactly one node in, and inserts the job in the same transaction. The insert is fenced
by the firing node's own lease and by the owner's: a node that lost its lease (paused, cut off,
declared dead) cannot fire, so a stale node never duplicates a run; the nodes that lost the race
wait for the winner's transaction and, if it died before its commit, take the slot themselves.
A leader-based cron (Oban's) can fire twice when two nodes both believe they lead; here there is
no leader to be wrong about.

**Clocks.** Each node measures the database's clock once when its schedules start and waits on
its own clock shifted by that difference, so nodes agree on when a slot is due to within the
round trip of that measurement. A ``cron`` without ``tz`` is evaluated in each node's local zone:
give ``tz`` when nodes may differ.

**Lifetime.** A schedule lives as long as its owner: ``unschedule`` from any node ends it; so do
its owner's shutdown (schedules stop when shutdown begins, as in one process) and the owner's
death (its schedules stop firing once its lease expired). A slot that no node could fire
because the database was away (for less than a lease) is fired once, late, when it answers
again, and the other slots that passed meanwhile are skipped, as one process fires late a slot
it slept through (:meth:`ClusterSchedules._fire_late_if_need_be`).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

import orjson
import psycopg
import trio
from attrs import define, field

from .._errors import BadCommand, CommandError, ShuttingDown, UnknownSchedule
from ..engine._jobs import FINAL_STATES, JobState
from ..triggers._clock import WallClock, sleep_until
from ..triggers._schedules import MIN_EVERY, CronTiming, Timing
from ..wire._commands import Schedule, Unschedule
from ..wire._events import RequestId, event, reply
from ..wire._outbox import encode_event
from ._db import Connection, DatabaseUnavailable
from ._model import job_id
from ._sql import query
from ._submit import Staged, prepare

if TYPE_CHECKING:
    from ._node import ClusterNode

__all__ = ["ClusterSchedules", "forget_own_schedules", "schedule", "unschedule"]

log = logging.getLogger("stepline")

RETRY_SLOT: Final = 0.5  # seconds between attempts to fire a slot while the database is away

_UNFINISHED: Final = frozenset(s.value for s in JobState if s not in FINAL_STATES)


class DatabaseClock:
    """This node's wall clock shifted to the database's (measured once)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


class AnchoredEvery:
    """``every`` seconds from an anchor on the database's clock: the same slots on every node.

    The first slot is one period after the anchor (the schedule's making), as in one process.
    """

    def __init__(self, every: float, anchor: float, clock: WallClock) -> None:
        if not (math.isfinite(every) and every >= MIN_EVERY):
            raise BadCommand(f"every: must be at least {MIN_EVERY} seconds, got {every}")
        self._every = every
        self._anchor = anchor
        self._clock = clock
        self._k = self._first_after(clock.now())

    def describe(self) -> dict[str, Any]:
        return {"every": self._every}

    def next(self) -> float:
        return self._anchor + self._k * self._every

    async def wait(self) -> None:
        await sleep_until(self._clock, self.next())

    def advance(self) -> None:
        self._k = max(self._k + 1, self._first_after(self._clock.now()))

    def _first_after(self, ts: float) -> int:
        return max(1, math.floor((ts - self._anchor) / self._every) + 1)


def timing_of(spec: dict[str, Any], anchor: float, clock: WallClock) -> Timing:
    """The slots of a stored schedule (or of one being made: raises ``BadCommand``)."""
    cron, tz = spec.get("cron"), spec.get("tz")
    every: Any = spec.get("every")
    if (cron is None) == (every is None):
        raise BadCommand("give exactly one of 'cron' and 'every'")
    if cron is not None:
        return CronTiming(cron, tz, clock)
    if tz is not None:
        raise BadCommand("'tz' applies to 'cron' only")
    return AnchoredEvery(float(every), anchor, clock)


def slot_of(timing: Timing) -> int:
    """The name of the slot due next: its time in milliseconds (alike on every node)."""
    return round(timing.next() * 1000)


@define(eq=False)
class _Live:
    """A schedule as a node follows it: its row, its slots, and its firing task's scope."""

    number: int
    owner: int
    spec: dict[str, Any]
    timing: Timing
    fired: int = 0
    last_job: int | None = None
    scope: trio.CancelScope = field(factory=trio.CancelScope)

    def record(self) -> dict[str, Any]:
        """The schedule's entry in ``status`` (as one process gives it, plus ``node``)."""
        rec: dict[str, Any] = {"schedule": f"s{self.number}", **self.timing.describe()}
        if self.spec.get("template") is not None:
            rec["template"] = self.spec["template"]
        rec.update(
            name=self.spec.get("name"),
            overlap=self.spec.get("overlap", "skip"),
            next=round(self.timing.next(), 6),
            fired=self.fired,
            last_job=None if self.last_job is None else job_id(self.last_job),
            node=self.owner,
        )
        return rec


class ClusterSchedules:
    """Every live schedule of the cluster as this node sees it, and the tasks firing them."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._conn = Connection(node.url, f"schedules-{node.id}")
        self.clock = DatabaseClock()
        self._live: dict[int, _Live] = {}
        self._stopped = False

    async def run(self) -> None:
        """Follow the table until cancelled; stop firing when shutdown begins."""
        node = self._node
        try:
            await self._measure_clock()
            async with trio.open_nursery() as nursery:
                while not self._stopped:
                    try:
                        await self.refresh(nursery)
                    except (DatabaseUnavailable, psycopg.Error) as exc:
                        log.warning("cannot read schedules: %s", exc)
                    await node.wakes["schedules"].wait(node.poll * 5)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._conn.aclose()

    def stop(self) -> None:
        """Shutdown began: this node fires nothing more."""
        self._stopped = True
        for live in self._live.values():
            live.scope.cancel()
        self._node.wakes["schedules"].set()

    async def _measure_clock(self) -> None:
        while True:
            try:
                before = time.time()
                db_now = await self._conn.run(
                    lambda c: c.execute(query("database_time")).fetchone()[0]  # type: ignore[index]  # one row, always
                )
                after = time.time()
            except (DatabaseUnavailable, psycopg.Error) as exc:
                log.warning("cannot read the database's clock: %s", exc)
                await trio.sleep(self._node.poll)
                continue
            self.clock.offset = float(db_now) - (before + after) / 2
            return

    async def refresh(self, nursery: trio.Nursery) -> None:
        """Read the live schedules: start firing new ones, stop removed ones."""
        rows: list[Any] = await self._conn.run(
            lambda c: c.execute(query("live_schedules")).fetchall()
        )
        seen: set[int] = set()
        for row in rows:
            number = row[0]
            seen.add(number)
            live = self._live.get(number)
            if live is None:
                live = self.parse(row)
                if live is None:
                    continue
                self._live[number] = live
                if not self._stopped:
                    nursery.start_soon(self._fire_forever, live)
            live.fired, live.last_job = int(row[4]), row[5]
        for number in set(self._live) - seen:
            self._live.pop(number).scope.cancel()

    def parse(self, row: tuple[Any, ...]) -> _Live | None:
        """A ``live_schedules`` row as a schedule (None, logged, for one that cannot be read)."""
        number, owner, spec, anchor, fired, last_job = row
        try:
            data = orjson.loads(bytes(spec))
            timing = timing_of(data, float(anchor), self.clock)
        except (orjson.JSONDecodeError, CommandError, TypeError, ValueError) as exc:
            log.warning("ignoring stored schedule s%d: %s", number, exc)
            return None
        return _Live(number, owner, data, timing, int(fired), last_job)

    async def records(self, conn: Connection) -> list[dict[str, Any]]:
        """Every live schedule's ``status`` entry, read from the table."""
        rows: list[Any] = await conn.run(lambda c: c.execute(query("live_schedules")).fetchall())
        parsed = (self.parse(row) for row in rows)
        return [live.record() for live in parsed if live is not None]

    async def _fire_forever(self, live: _Live) -> None:
        with live.scope:
            while True:
                await live.timing.wait()
                await self._fire_late_if_need_be(live, slot_of(live.timing))
                live.timing.advance()  # to the first slot still to come: the passed ones skip

    async def _fire_late_if_need_be(self, live: _Live, slot: int) -> None:
        """Fire ``slot``, trying again while the database cannot be reached.

        A slot that no node could fire (the database away, for less than a lease) is fired
        once when it answers again, late, as one process fires late a slot it slept through;
        the slots that came due meanwhile are skipped (logged). Exactly once still holds: the
        slot's row decides, and a node that lost its lease, or a schedule whose owner did,
        fires nothing (``claim_slot``).
        """
        node = self._node
        late = False
        while not node.lease_lost:
            try:
                await self._fire(live, slot)
                break
            except DatabaseUnavailable as exc:
                log.warning("schedule s%d: slot %d not fired yet: %s", live.number, slot, exc)
                late = True
                await trio.sleep(min(node.poll, RETRY_SLOT))
            except psycopg.Error as exc:
                log.warning("schedule s%d: slot %d not fired here: %s", live.number, slot, exc)
                break
        if late:
            behind = self.clock.now() - slot / 1000
            log.warning("schedule s%d: slot %d tried %.1f s late; slots due meanwhile are "
                        "skipped", live.number, slot, behind)  # fmt: skip

    async def _fire(self, live: _Live, slot: int) -> None:
        node = self._node
        spec = live.spec
        try:
            staged: Staged | CommandError = await prepare(
                node, spec.get("job"), spec.get("template"), spec.get("params"),
                spec.get("name"), None, {"schedule": f"s{live.number}"},
            )  # fmt: skip
        except ShuttingDown:
            return  # this node stops firing; the others go on
        except CommandError as exc:
            staged = exc
        fire = functools.partial(_fire_in, node=node, live=live, slot=slot, staged=staged)
        outcome = await self._conn.run(fire)
        if outcome is not None and outcome["event"] == "accepted":
            live.fired += 1
            live.last_job = int(outcome["job"][1:])


def _fire_in(
    conn: Any, *, node: ClusterNode, live: _Live, slot: int, staged: Staged | CommandError
) -> dict[str, Any] | None:
    """One transaction: win the slot, then submit the job (or record why not) for the owner.

    Returns the event for the owner (``accepted`` or ``schedule_skipped``), or None when
    another node fired this slot. The owner gets it through ``stepline_events`` even when it is
    this node: whichever node claims the job, its ``accepted`` is then delivered before its
    ``started`` (see the claimer).
    """
    sid = f"s{live.number}"
    won = conn.execute(
        query("claim_slot"), {"schedule": live.number, "slot": slot, "node": node.id}
    ).fetchone()
    if won is None:
        return None
    owner, last_job, last_state = won
    outcome: dict[str, Any]
    if spec_overlap(live.spec) == "skip" and last_state in _UNFINISHED:
        message = f"job j{last_job} of the previous firing is still {last_state}"
        outcome = event("schedule_skipped", schedule=sid, reason="overlap", message=message,
                        job=job_id(last_job))  # fmt: skip
    elif isinstance(staged, CommandError):
        outcome = event("schedule_skipped", schedule=sid, reason=staged.code,
                        message=staged.message)  # fmt: skip
    else:
        (number,) = conn.execute(query("next_ids"), {"n": 1}).fetchone()
        conn.execute(
            query("insert_jobs"),
            {"node": owner, "ids": [number], "names": [staged.name],
             "requests": [staged.request]},
        )  # fmt: skip
        conn.execute(query("record_firing"), {"schedule": live.number, "slot": slot, "job": number})
        conn.execute(query("notify"), {"channel": "stepline_jobs", "payload": str(number)})
        outcome = {"event": "accepted", "ts": time.time(), "job": job_id(number), "schedule": sid}
    conn.execute(
        query("forward_events"), {"submitters": [owner], "bodies": [encode_event(outcome)]}
    )
    conn.execute(query("notify_nodes"), {"nodes": [owner], "payload": "events"})
    return outcome


def spec_overlap(spec: dict[str, Any]) -> str:
    return str(spec.get("overlap", "skip"))


# -- the commands ----------------------------------------------------------------------------


async def schedule(node: ClusterNode, cmd: Schedule, rid: RequestId) -> None:
    """Validate, store (owned by this node), tell every node; reply ``scheduled``."""
    executor = node.executor
    executor.check_accepting()
    spec = {
        "cron": cmd.cron, "every": cmd.every, "tz": cmd.tz, "job": cmd.job,
        "template": cmd.template, "params": cmd.params, "name": cmd.name, "overlap": cmd.overlap,
    }  # fmt: skip
    schedules = node.schedules
    timing_of(spec, 0.0, schedules.clock)  # a bad cron, every or tz: refused before writing
    await prepare(node, cmd.job, cmd.template, cmd.params, cmd.name, rid, {})

    def write(conn: Any) -> tuple[int, float]:
        row = conn.execute(
            query("add_schedule"), {"node": node.id, "spec": orjson.dumps(spec)}
        ).fetchone()
        conn.execute(query("notify"), {"channel": "stepline_schedules", "payload": ""})
        return int(row[0]), float(row[1])

    number, anchor = await node.commands_conn.run(write)
    timing = timing_of(spec, anchor, schedules.clock)
    node.wakes["schedules"].set()
    node.stream.emit(reply("scheduled", rid, schedule=f"s{number}", next=round(timing.next(), 6)))


async def unschedule(node: ClusterNode, cmd: Unschedule, rid: RequestId) -> None:
    """End a schedule, whichever node made it; a job it already submitted goes on."""
    digits = cmd.schedule[1:]
    if not cmd.schedule.startswith("s") or not digits.isdigit() or len(digits) > 18:
        raise UnknownSchedule(f"unknown schedule {cmd.schedule!r}")

    def remove(conn: Any) -> bool:
        row = conn.execute(query("remove_schedule"), {"schedule": int(digits)}).fetchone()
        conn.execute(query("notify"), {"channel": "stepline_schedules", "payload": ""})
        return row is not None

    if not await node.commands_conn.run(remove):
        raise UnknownSchedule(f"unknown schedule {cmd.schedule!r}")
    node.wakes["schedules"].set()
    node.stream.emit(reply("unscheduled", rid, schedule=cmd.schedule))


async def forget_own_schedules(node: ClusterNode) -> None:
    """Shutdown began on the owner: its schedules end for every node."""

    def remove(conn: Any) -> None:
        conn.execute(query("remove_own_schedules"), {"node": node.id})
        conn.execute(query("notify"), {"channel": "stepline_schedules", "payload": ""})

    try:
        await node.commands_conn.run(remove)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        log.warning("could not end this node's schedules (they end with its lease): %s", exc)
