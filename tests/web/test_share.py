"""The front's share of the loop, on the mock clock: who the executor is busy for, and waiting."""

from __future__ import annotations

from typing import cast

import pytest
import trio

from stepline.web._share import ACTIVE, BATCH, LoopShare

FRONT = cast(trio.lowlevel.Task, object())  # stands for the front's task in the timing hooks
JOB = cast(trio.lowlevel.Task, object())


def front_step(share: LoopShare, clock: trio.testing.MockClock, seconds: float) -> None:
    """A step of the front's task that took ``seconds``."""
    share.before_task_step(FRONT)
    clock.jump(seconds)
    share.after_task_step(FRONT)


async def test_only_other_peoples_events_hold_the_front_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    share = LoopShare(share=0.1, burst=0.01, clock=trio.current_time, step_clock=trio.current_time)
    share.adopt(FRONT)
    front_step(share, autojump_clock, 0.05)  # far over its share
    with share.submitting():
        share.observe({"event": "accepted", "job": "j1"})
    share.observe({"event": "started", "job": "j1"})
    share.observe({"event": "heartbeat"})
    start = trio.current_time()
    await share.turn()  # its own job and a heartbeat: nobody else is using the executor
    assert trio.current_time() == start
    front_step(share, autojump_clock, 0.02)  # a debt of 0.2 s at a tenth, less ACTIVE's
    share.observe({"event": "started", "job": "j2"})  # a job someone else submitted
    start = trio.current_time()
    await share.turn()
    waited = trio.current_time() - start
    assert 0.15 < waited < ACTIVE  # until the debt was paid, not until j2's owner was quiet


async def test_a_reply_on_stdin_holds_the_front_back_until_it_is_quiet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    share = LoopShare(share=0.1, burst=0.01, clock=trio.current_time, step_clock=trio.current_time)
    share.adopt(FRONT)
    front_step(share, autojump_clock, 1.0)  # a debt of ten seconds at a tenth
    share.observe({"event": "pong", "id": 3})
    start = trio.current_time()
    await share.turn()
    waited = trio.current_time() - start
    assert ACTIVE - 0.05 < waited < ACTIVE + 0.05  # released once stdin was quiet, not after 10 s


async def test_the_jobs_steps_cost_the_front_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    share = LoopShare(share=0.1, burst=0.01, clock=trio.current_time, step_clock=trio.current_time)
    share.adopt(FRONT)
    share.observe({"event": "started", "job": "j9"})
    share.before_task_step(JOB)
    autojump_clock.jump(0.05)
    share.after_task_step(JOB)
    start = trio.current_time()
    await share.stream_turn()
    assert trio.current_time() == start
    assert share.front_time == 0


async def test_a_finished_job_of_the_front_is_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    share = LoopShare(clock=trio.current_time, step_clock=trio.current_time)
    with share.submitting():
        share.observe({"event": "accepted", "job": "j1"})
    share.observe({"event": "finished", "job": "j1"})
    share.adopt(FRONT)
    front_step(share, autojump_clock, 1.0)
    share.observe({"event": "log", "job": "j1"})  # no longer known as the front's: someone else's
    start = trio.current_time()
    await share.turn()
    assert trio.current_time() > start


async def test_an_ended_wait_lets_the_requests_queued_behind_it_go_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One request per wait held the front far below its share on a busy machine; a batch goes,
    and the next request after it waits again (the batch's debt is paid)."""
    share = LoopShare(share=0.1, burst=0.01, clock=trio.current_time, step_clock=trio.current_time)
    share.adopt(FRONT)
    front_step(share, autojump_clock, 0.02)  # a debt of 0.1 s at a tenth
    share.observe({"event": "started", "job": "j2"})  # someone else uses the executor
    went: list[float] = []

    async def request() -> None:
        await share.turn()
        went.append(trio.current_time())
        front_step(share, autojump_clock, 0.001)  # each request's handler

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(BATCH + 1):
            nursery.start_soon(request)
        with trio.move_on_after(ACTIVE - 0.01):  # keep someone else busy meanwhile
            while True:
                share.observe({"event": "started", "job": "j2"})
                await trio.sleep(0.01)
    batch = went[:BATCH]
    assert batch[0] > start  # the first waited for the debt
    handlers = 0.001 * (BATCH - 1)  # the clock moves only by the batch's own handlers
    assert batch[-1] - batch[0] == pytest.approx(handlers)  # no wait each
    assert went[BATCH] - batch[-1] > 0.01  # the one after the batch waited for its debt


async def test_the_share_times_and_watches_only_while_the_front_serves() -> None:
    ticks = iter(range(1_000_000))
    share = LoopShare(step_clock=lambda: float(next(ticks)))
    share.enlist(trio.lowlevel.current_task())
    assert not armed(share)
    await trio.lowlevel.checkpoint()
    assert share.front_time == 0  # no instrument: nothing is timed, nothing is paid per step
    with share.serving():
        with share.serving():  # two requests at once
            assert armed(share)
        assert armed(share)
        await trio.lowlevel.checkpoint()
        assert share.front_time > 0
    assert not armed(share)
    with pytest.raises(KeyError):  # the instrument was removed with the last request
        trio.lowlevel.remove_instrument(share)


def armed(share: LoopShare) -> bool:
    """Read afresh each time (an attribute read would be narrowed by the asserts before it)."""
    return share.armed
