"""Schedules: jobs submitted by time, from a ``cron`` expression or ``every`` N seconds.

``{"op": "schedule", "cron": "*/5 * * * *", "tz": "Europe/Paris", "job": {...}}`` (or ``every``
instead of ``cron``; ``template`` + ``params`` instead of ``job``; ``name``; ``overlap``) answers
``scheduled`` with the schedule id (``s1``, ``s2``, ...) and ``next``, the Unix time of the first
firing. Each firing submits a job exactly as ``submit`` would (the same validation, queue and
``--on-full`` rule), and its ``accepted`` event carries ``schedule``: the schedule's id.

Decisions:

* The job (or template) is validated when the schedule is made, so a broken one is refused at
  once (``invalid_job``, ``unknown_template``), and again at each firing, exactly as a ``submit``
  — a template redefined since is used in its new form.
* ``cron`` has five fields (minute hour day-of-month month day-of-week) and is evaluated in local
  time, or in ``tz`` (an IANA name such as ``UTC`` or ``Europe/Paris``). ``every`` is a period in
  seconds (at least :data:`MIN_EVERY`); its first firing is one period after the schedule was made,
  and it keeps a fixed rate (firing k is at start + k * every), measured on the monotonic clock.
* A firing that comes due while the schedule's previous firing is still being submitted (a full
  queue with ``--on-full block``) is skipped, and so is one that comes due while the previous
  job still runs under ``overlap: "skip"`` (the default); ``overlap: "allow"`` starts it anyway.
  A skipped or refused firing is reported with a ``schedule_skipped`` event (``schedule``,
  ``reason``: ``overlap`` or the error code such as ``queue_full``, ``message``; ``job`` for an
  overlap). Missed firings are not made up later: the next firing is the next one due.
* Schedules stop when shutdown begins and are not kept across a restart. ``unschedule`` stops one
  at once; a job it already submitted is not affected.

Time: waiting goes through trio (so tests run on a ``MockClock``), calendar maths through a
:class:`~stepline.triggers._clock.WallClock`; see :mod:`stepline.triggers._clock`.
"""

from __future__ import annotations

import datetime
import errno
import math
import zoneinfo
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import trio
from attrs import define, field

from .._errors import BadCommand, CommandError, ShuttingDown, Unavailable, UnknownSchedule
from .._lazy import loading
from ..engine._jobs import FINAL_STATES, Job
from ..wire._events import event
from ._clock import SystemClock, WallClock, sleep_until

if TYPE_CHECKING:
    from ..engine._executor import Executor

__all__ = ["MIN_EVERY", "CronTiming", "EveryTiming", "ScheduleEntry", "Schedules"]

MIN_EVERY: Final = 0.01
"""Shortest ``every`` period in seconds: a smaller one would make the executor spin."""

_OUT_OF_RESOURCES: Final = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOMEM))

_MAX_TRIES: Final = 8  # cron times tried for one that lies after a given instant


class Timing(Protocol):
    """When a schedule fires: ``next`` (Unix time) and a way to wait for it."""

    def describe(self) -> dict[str, Any]: ...

    def next(self) -> float: ...

    async def wait(self) -> None: ...

    def advance(self) -> None: ...


class CronTiming:
    """A five-field cron expression, in local time or in an IANA zone (wall-clock based)."""

    def __init__(self, expr: str, tz: str | None, clock: WallClock) -> None:
        with loading("cron schedules"):
            from croniter import croniter  # type: ignore[import-untyped]  # lazily: start-up time

        if len(expr.split()) != 5 or not croniter.is_valid(expr):
            raise BadCommand(f"cron: not a valid five-field cron expression: {expr!r}")
        self._expr = expr
        self._tz_name = tz
        self._zone = _zone(tz)
        self._clock = clock
        self._next = self._after(clock.now())

    def describe(self) -> dict[str, Any]:
        return {"cron": self._expr, "tz": self._tz_name}

    def next(self) -> float:
        return self._next

    async def wait(self) -> None:
        await sleep_until(self._clock, self._next)

    def advance(self) -> None:
        """The first firing strictly after the one just due and after now (missed ones skipped)."""
        self._next = self._after(max(self._next, self._clock.now()))

    def _after(self, ts: float) -> float:
        """The first firing strictly after ``ts``.

        croniter steps *naive* wall-clock times (local, or in the zone), and each is mapped
        back to Unix time through the zone's rules, so both zone kinds behave alike across DST:
        a wall time that does not exist (spring forward) maps an hour later, and one that
        exists twice (fall back) fires once, at its first occurrence. Trying ``fold=1`` and
        then later times guarantees progress even when ``ts`` lies in a repeated hour, where
        the first occurrence of the next wall time may already be past.
        """
        from croniter import CroniterBadDateError, croniter

        start = datetime.datetime.fromtimestamp(ts, self._zone).replace(tzinfo=None)
        times = croniter(self._expr, start)
        for _ in range(_MAX_TRIES):
            try:
                wall: datetime.datetime = times.get_next(datetime.datetime)
            except CroniterBadDateError:  # a valid expression no date matches ("0 0 30 2 *")
                raise BadCommand(f"cron: {self._expr!r} never fires: no date matches it") from None
            for fold in (0, 1):
                candidate = self._timestamp(wall.replace(fold=fold))
                if candidate > ts:
                    return candidate
        return ts + 60.0  # unreachable in practice; never spin on a firing in the past

    def _timestamp(self, wall: datetime.datetime) -> float:
        if self._zone is None:
            return wall.timestamp()  # a naive datetime: the system's local rules
        return wall.replace(tzinfo=self._zone).timestamp()


class EveryTiming:
    """A fixed period in seconds, on trio's monotonic clock; ``next`` is shown as Unix time."""

    def __init__(self, every: float, clock: WallClock) -> None:
        if not (math.isfinite(every) and every >= MIN_EVERY):
            raise BadCommand(f"every: must be at least {MIN_EVERY} seconds, got {every}")
        self._every = every
        self._clock = clock
        self._due = trio.current_time() + every

    def describe(self) -> dict[str, Any]:
        return {"every": self._every}

    def next(self) -> float:
        return self._clock.now() + (self._due - trio.current_time())

    async def wait(self) -> None:
        await trio.sleep_until(self._due)

    def advance(self) -> None:
        now = trio.current_time()
        self._due += self._every
        if self._due <= now:  # fell behind (a blocked submit): skip to the next one due
            self._due += math.ceil((now - self._due) / self._every) * self._every
            if self._due <= now:
                self._due += self._every


@define(eq=False)
class ScheduleEntry:
    """One schedule: when it fires, what it submits, and its running task's cancel scope."""

    id: str
    timing: Timing
    job: Any
    template: str | None
    params: Mapping[str, Any] | None
    name: str | None
    overlap: Literal["skip", "allow"]
    scope: trio.CancelScope = field(factory=trio.CancelScope)
    fired: int = 0
    last_job: Job | None = None

    def record(self) -> dict[str, Any]:
        """The schedule's entry in ``status``."""
        rec: dict[str, Any] = {"schedule": self.id, **self.timing.describe()}
        if self.template is not None:
            rec["template"] = self.template
        rec.update(name=self.name, overlap=self.overlap, next=self.next(), fired=self.fired)
        rec["last_job"] = self.last_job.id if self.last_job is not None else None
        return rec

    def next(self) -> float:
        return round(self.timing.next(), 6)


class Schedules:
    """Every live schedule, and the tasks that fire them (one task per schedule)."""

    def __init__(self, executor: Executor, clock: WallClock | None = None) -> None:
        self._executor = executor
        self.clock: WallClock = clock if clock is not None else SystemClock()
        self._entries: dict[str, ScheduleEntry] = {}
        self._next_id = 1
        self._nursery: trio.Nursery | None = None
        self._stopped = False

    def add(
        self,
        *,
        cron: str | None = None,
        every: float | None = None,
        tz: str | None = None,
        job: Any = None,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        overlap: Literal["skip", "allow"] = "skip",
    ) -> ScheduleEntry:
        """Validate and start a schedule; raises a ``CommandError`` for a bad one."""
        if self._stopped:
            raise ShuttingDown("not accepting schedules: the executor is shutting down")
        self._executor.validate(job, template, params)  # refuse a broken job now, not at 3 am
        entry = ScheduleEntry(
            id=f"s{self._next_id}",
            timing=self._timing(cron, every, tz),
            job=job,
            template=template,
            params=params,
            name=name,
            overlap=overlap,
        )
        self._next_id += 1
        self._entries[entry.id] = entry
        if self._nursery is not None:
            self._nursery.start_soon(self._fire_forever, entry)
        return entry

    def remove(self, schedule_id: str) -> ScheduleEntry:
        """Stop a schedule; a job it already submitted goes on."""
        entry = self._entries.pop(schedule_id, None)
        if entry is None:
            raise UnknownSchedule(f"unknown schedule {schedule_id!r}")
        entry.scope.cancel()
        return entry

    def records(self) -> list[dict[str, Any]]:
        return [entry.record() for entry in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def stop(self) -> None:
        """Shutdown began: stop every schedule and refuse new ones."""
        self._stopped = True
        for entry in self._entries.values():
            entry.scope.cancel()
        self._entries.clear()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the schedules' tasks until cancelled (schedules made earlier start now)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for entry in self._entries.values():
                nursery.start_soon(self._fire_forever, entry)
            task_status.started()
            await trio.sleep_forever()

    # -- firing ------------------------------------------------------------------------------

    def _timing(self, cron: str | None, every: float | None, tz: str | None) -> Timing:
        if (cron is None) == (every is None):
            raise BadCommand("give exactly one of 'cron' and 'every'")
        if cron is not None:
            return CronTiming(cron, tz, self.clock)
        if tz is not None:
            raise BadCommand("'tz' applies to 'cron' only")
        assert every is not None
        return EveryTiming(every, self.clock)

    async def _fire_forever(self, entry: ScheduleEntry) -> None:
        with entry.scope:
            while True:
                await entry.timing.wait()
                # A driver not reading stdout must stop schedules too: every firing emits
                # (`accepted`, or `schedule_skipped` for an overlap), so firings wait for a
                # congested outbox like every other producer; the ones missed meanwhile are
                # skipped by advance(), not fired in a burst.
                await self._executor.outbox.wait_writable()
                await self._fire(entry)
                try:
                    entry.timing.advance()
                except BadCommand as exc:  # it fired before, yet no later date matches
                    self._skipped(entry, exc.code, exc.message)
                    self._entries.pop(entry.id, None)
                    return

    async def _fire(self, entry: ScheduleEntry) -> None:
        last = entry.last_job
        if entry.overlap == "skip" and last is not None and last.state not in FINAL_STATES:
            message = f"job {last.id} of the previous firing is still {last.state.value}"
            self._skipped(entry, "overlap", message, job=last.id)
            return
        try:
            entry.last_job = await self._executor.submit(
                entry.job,
                template=entry.template,
                params=entry.params,
                name=entry.name,
                schedule=entry.id,
            )
        except ShuttingDown:
            entry.scope.cancel()  # shutdown began while this firing waited for room
            return
        except CommandError as exc:
            self._skipped(entry, exc.code, exc.message)
            return
        entry.fired += 1

    def _skipped(self, entry: ScheduleEntry, reason: str, message: str, **extra: Any) -> None:
        self._executor.outbox.emit(
            event("schedule_skipped", schedule=entry.id, reason=reason, message=message, **extra)
        )


def _zone(tz: str | None) -> datetime.tzinfo | None:
    """The zone ``tz`` names; None (local time) when not given."""
    if tz is None:
        return None
    try:
        return zoneinfo.ZoneInfo(tz)
    except OSError as exc:
        if exc.errno in _OUT_OF_RESOURCES:  # the zone file could not be opened right now
            raise Unavailable(f"tz: could not read time zone {tz[:80]!r}: {exc.strerror}") from None
        # a name that is a directory of the zone database ("America") or too long for a file
        # name: zoneinfo opens it without checking first
        raise BadCommand(f"tz: unknown time zone {tz[:80]!r}") from None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BadCommand(f"tz: unknown time zone {tz[:80]!r}") from None
