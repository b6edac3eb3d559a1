"""Schedules (`cron`, `every`) on trio's autojump clock with a controlled wall clock.

:class:`TrioWallClock` makes calendar time advance with trio's mock clock from a chosen start,
so a week of "every day at 02:00" is checked in milliseconds, firing times exactly.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from stepline import Config, Executor
from stepline.server._dispatch import dispatch
from stepline.triggers._attach import Triggers
from stepline.triggers._clock import SystemClock, TrioWallClock, sleep_until
from stepline.triggers._schedules import CronTiming
from stepline.wire._commands import Schedule, Status, Unschedule
from stepline.wire._outbox import StreamOutbox

from ..conftest import MemoryOutbox

Event = dict[str, Any]
UTC = datetime.UTC
# 2024-01-01 00:00:00 UTC, a Monday, minus 30 s: cron maths starts from a known instant.
NEW_YEAR = datetime.datetime(2024, 1, 1, tzinfo=UTC).timestamp()
START = NEW_YEAR - 30


@asynccontextmanager
async def executor(
    start: float = START, **config: Any
) -> AsyncIterator[tuple[Executor, MemoryOutbox, TrioWallClock]]:
    out = MemoryOutbox()
    clock = TrioWallClock(start)
    ex = Executor(Config(heartbeat=0, **config), out)
    Triggers.attach(ex, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        yield ex, out, clock
        ex.shutdown("drain")


def named(out: MemoryOutbox, name: str, **fields: Any) -> list[Event]:
    return [
        e
        for e in out.events
        if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
    ]


async def schedule(ex: Executor, out: MemoryOutbox, rid: Any = "s", **fields: Any) -> Event:
    await dispatch(ex, Schedule(**fields), rid)
    return out.events[-1]


async def nth(out: MemoryOutbox, name: str, n: int) -> None:
    """Wait until the n-th event called ``name`` has been emitted."""
    await out.wait_for(lambda _: len(named(out, name)) >= n)


def utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


async def test_every_fires_at_a_fixed_rate(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, clock):
        reply = await schedule(ex, out, every=10, job={"value": "tick"}, name="ticker")
        assert reply["event"] == "scheduled"
        assert (reply["id"], reply["schedule"]) == ("s", "s1")
        assert reply["next"] == pytest.approx(clock.now() + 10)
        await trio.sleep(35)
        accepted = named(out, "accepted")
        assert [e["schedule"] for e in accepted] == ["s1"] * 3
        assert "id" not in accepted[0]  # a firing answers no command
        finished = named(out, "finished")
        assert [e["output"] for e in finished] == ["tick"] * 3
        assert ex.table.get(accepted[0]["job"]).name == "ticker"
        await dispatch(ex, Status(), "st")
        (record,) = named(out, "status")[0]["schedules"]
        assert record["schedule"] == "s1"
        assert record["every"] == 10
        assert (record["fired"], record["last_job"]) == (3, accepted[-1]["job"])
        assert record["next"] == pytest.approx(clock.now() + 5)


async def test_cron_fires_on_the_minute_in_utc(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, clock):
        reply = await schedule(ex, out, cron="0 */6 * * *", tz="UTC", job={"value": 1})
        assert utc(reply["next"]) == "2024-01-01 00:00"
        fired: list[str] = []
        for n in range(1, 6):
            await nth(out, "accepted", n)
            fired.append(utc(clock.now()))
        assert fired == [
            "2024-01-01 00:00",
            "2024-01-01 06:00",
            "2024-01-01 12:00",
            "2024-01-01 18:00",
            "2024-01-02 00:00",
        ]


async def test_cron_in_a_named_zone(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, _):
        reply = await schedule(ex, out, cron="0 9 * * 1-5", tz="Asia/Tokyo", job={"value": 1})
        # Monday 2024-01-01 09:00 in Tokyo is 00:00 UTC
        assert utc(reply["next"]) == "2024-01-01 00:00"


def test_cron_uses_local_time_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        start = datetime.datetime(2024, 3, 9, 14, tzinfo=UTC)  # 09:00 EST
        # 08:30 EDT on the DST day itself, then 08:30 EDT
        assert firings("30 8 * * *", None, start, n=2) == ["2024-03-10 12:30", "2024-03-11 12:30"]
    finally:
        monkeypatch.undo()
        time.tzset()


class FixedClock:
    def __init__(self, when: datetime.datetime) -> None:
        self.ts = when.timestamp()

    def now(self) -> float:
        return self.ts


def firings(expr: str, tz: str | None, start: datetime.datetime, n: int = 3) -> list[str]:
    """The next ``n`` firings (UTC), stepping the clock to each as the schedule would."""
    clock = FixedClock(start)
    timing = CronTiming(expr, tz, clock)
    out = []
    for _ in range(n):
        out.append(utc(timing.next()))
        clock.ts = timing.next()
        timing.advance()
    return out


def test_cron_across_dst_changes() -> None:
    paris = "Europe/Paris"
    # spring forward: 02:30 does not exist on 31 March; it fires at 03:30 CEST (01:30 UTC)
    assert firings("30 2 * * *", paris, datetime.datetime(2024, 3, 30, 12, tzinfo=UTC)) == [
        "2024-03-31 01:30",
        "2024-04-01 00:30",
        "2024-04-02 00:30",
    ]
    # fall back: 02:30 happens twice on 27 October; it fires once, at the first
    assert firings("30 2 * * *", paris, datetime.datetime(2024, 10, 26, 12, tzinfo=UTC)) == [
        "2024-10-27 00:30",
        "2024-10-28 01:30",
        "2024-10-29 01:30",
    ]
    # made during the repeated hour's second pass (02:10 CET): the next 02:30 is still ahead
    assert firings(
        "30 2 * * *", paris, datetime.datetime(2024, 10, 27, 1, 10, tzinfo=UTC), n=1
    ) == ["2024-10-27 01:30"]


async def test_overlap_skip_is_the_default(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, _):
        await schedule(ex, out, every=10, job={"sleep": 25})
        await trio.sleep(45)  # firings at 10 (runs to 35), 20 and 30 (skipped), 40
        await dispatch(ex, Unschedule("s1"), "u")
    accepted = named(out, "accepted")
    assert len(accepted) == 2
    skipped = named(out, "schedule_skipped")
    assert [(e["schedule"], e["reason"], e["job"]) for e in skipped] == [
        ("s1", "overlap", accepted[0]["job"])
    ] * 2


async def test_overlap_allow_runs_them_together(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, _):
        await schedule(ex, out, every=10, job={"sleep": 25}, overlap="allow")
        await trio.sleep(45)
        await dispatch(ex, Unschedule("s1"), "u")
    assert len(named(out, "accepted")) == 4
    assert named(out, "schedule_skipped") == []


async def test_template_with_params(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, _):
        ex.define("greet", {"params": {"who": "x"}, "steps": [{"value": "hi ${params.who}"}]})
        await schedule(ex, out, every=60, template="greet", params={"who": "cron"})
        await out.wait_for(lambda e: e["event"] == "finished")
        await dispatch(ex, Unschedule("s1"), None)
    assert named(out, "finished")[0]["output"] == "hi cron"
    assert named(out, "status") == []


async def test_unschedule_stops_firing(autojump_clock: trio.abc.Clock) -> None:
    async with executor() as (ex, out, _):
        await schedule(ex, out, every=10, job={"value": 1})
        await trio.sleep(15)
        await dispatch(ex, Unschedule("s1"), 9)
        await trio.sleep(100)
        await dispatch(ex, Unschedule("s1"), 10)
        await dispatch(ex, Status(), "st")
    assert len(named(out, "accepted")) == 1
    assert named(out, "unscheduled")[0]["schedule"] == "s1"
    assert named(out, "unscheduled")[0]["id"] == 9
    assert named(out, "error")[0]["code"] == "unknown_schedule"
    assert named(out, "status")[0]["schedules"] == []


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"every": 10, "job": {"fail": 1}}, "invalid_job", "steps[0].fail"),
        ({"every": 10, "template": "nope"}, "unknown_template", "nope"),
        ({"every": 10}, "bad_command", "exactly one of 'job' and 'template'"),
        ({"job": {"value": 1}}, "bad_command", "exactly one of 'cron' and 'every'"),
        ({"every": 1, "cron": "* * * * *", "job": {"value": 1}}, "bad_command", "exactly one"),
        ({"every": 0, "job": {"value": 1}}, "bad_command", "at least"),
        ({"cron": "61 * * * *", "job": {"value": 1}}, "bad_command", "cron"),
        ({"cron": "* * * * * *", "job": {"value": 1}}, "bad_command", "five-field"),
        (
            {"cron": "* * * * *", "tz": "Mars/Olympus", "job": {"value": 1}},
            "bad_command",
            "unknown time zone",
        ),
        ({"every": 5, "tz": "UTC", "job": {"value": 1}}, "bad_command", "'tz' applies"),
    ],
)
async def test_bad_schedules_are_refused(
    autojump_clock: trio.abc.Clock, fields: Event, code: str, words: str
) -> None:
    async with executor() as (ex, out, _):
        reply = await schedule(ex, out, rid=3, **fields)
        await trio.sleep(100)
    assert reply["event"] == "error"
    assert (reply["id"], reply["code"]) == (3, code)
    assert words in reply["message"]
    assert named(out, "accepted") == []


async def test_firing_into_a_full_queue_is_reported(autojump_clock: trio.abc.Clock) -> None:
    async with executor(workers=1, queue_size=1, on_full="reject") as (ex, out, _):
        await ex.submit({"sleep": 100})
        await trio.sleep(1)
        await ex.submit({"sleep": 100})  # running + one queued: the queue is full
        await schedule(ex, out, every=10, job={"value": 1}, overlap="allow")
        await trio.sleep(15)
        await dispatch(ex, Unschedule("s1"), None)
    (skipped,) = named(out, "schedule_skipped")
    assert skipped["reason"] == "queue_full"


async def test_shutdown_stops_schedules(autojump_clock: trio.abc.Clock) -> None:
    out = MemoryOutbox()
    ex = Executor(Config(heartbeat=0), out)
    Triggers.attach(ex, TrioWallClock(START))
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await schedule(ex, out, every=10, job={"value": 1})
        await schedule(ex, out, cron="* * * * *", job={"value": 1})
        await trio.sleep(15)
        ex.shutdown("drain")
        with trio.fail_after(1):  # schedules do not keep a draining executor alive
            await ex.closed.wait()
    reply = await schedule(ex, out, rid=1, every=10, job={"value": 1})
    assert reply["code"] == "shutting_down"
    assert len(named(out, "accepted")) == 1


async def test_schedule_made_before_run_starts(autojump_clock: trio.abc.Clock) -> None:
    out = MemoryOutbox()
    ex = Executor(Config(heartbeat=0), out)
    Triggers.attach(ex, TrioWallClock(START))
    await schedule(ex, out, every=10, job={"value": 1})
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await trio.sleep(11)
        ex.shutdown("drain")
    assert len(named(out, "accepted")) == 1


async def test_sleep_until_rechecks_the_wall_clock(autojump_clock: trio.abc.Clock) -> None:
    clock = TrioWallClock(0.0)
    start = trio.current_time()
    await sleep_until(clock, 3600.5)
    assert trio.current_time() - start == pytest.approx(3600.5)
    await sleep_until(clock, 0)  # in the past: returns at once
    assert SystemClock().now() == pytest.approx(time.time(), abs=1)


async def test_schedules_wait_for_a_reader_that_stopped_reading(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Regression: 50 schedules at ``every: 0.01`` with stdout unread grew RSS ~4 MiB/s: each
    firing emitted (``schedule_skipped`` for the overlap) whatever the outbox held."""
    send, _never_read = trio.testing.lockstep_stream_pair()
    out = StreamOutbox(send, high_water=4096)
    ex = Executor(Config(heartbeat=0), out)
    Triggers.attach(ex, TrioWallClock(START))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out.run)
        await nursery.start(ex.run)
        for n in range(20):
            await dispatch(ex, Schedule(every=0.01, job={"sleep": 1000}), n)
        await trio.sleep(60)  # 20 schedules x 6,000 firings due meanwhile
        held = out.pending_bytes
        await trio.sleep(60)
        assert out.pending_bytes == held  # nothing more once congested
        assert held < 4096 + 20 * 400  # the mark, plus at most about one event per schedule
        nursery.cancel_scope.cancel()
