"""`run` steps and `run` callbacks through the Runner seam, with the fake runner: no processes,
exact times on trio's mock clock."""

from __future__ import annotations

import json
import math
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from stepline import Config, Executor
from stepline.runners._base import Launch, ProcessResult, ProcessStartError
from stepline.runners._fake import FakeRunner, Handler, Stop
from stepline.triggers._attach import Triggers

from ..conftest import MemoryOutbox

Event = dict[str, Any]


@asynccontextmanager
async def on(
    handler: Handler, *, stop_takes: float = 0.0, **config: Any
) -> AsyncIterator[tuple[Executor, MemoryOutbox, FakeRunner]]:
    """A running executor whose processes the fake runner makes up; drained on exit."""
    out = MemoryOutbox()
    runner = FakeRunner(handler, stop_takes=stop_takes)
    ex = Executor(Config(heartbeat=0, **config), out, runner=runner)
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        yield ex, out, runner
        ex.shutdown("drain")


def exits(code: int, stdout: str = "", stderr: str = "") -> Handler:
    return lambda launch: ProcessResult(code, stdout, stderr, False)


async def forever(launch: Launch) -> ProcessResult:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def finish(ex: Executor, out: MemoryOutbox, job: Any) -> Event:
    return await out.finished((await ex.submit(job)).id)


async def test_a_run_step_hands_the_runner_its_launch(autojump_clock: trio.abc.Clock) -> None:
    async with on(exits(0, "out\n", "err\n")) as (ex, out, runner):
        step = {"run": ["make", "-j2"], "env": {"A": "1"}, "cwd": "/src", "stdin": "in", "grace": 2}
        finished = await finish(ex, out, step)
    assert runner.launches == [Launch(("make", "-j2"), {"A": "1"}, "/src", "in", 2.0)]
    assert finished["output"] == {"exit": 0, "stdout": "out\n", "stderr": "err\n"}


async def test_without_cwd_a_run_step_runs_in_the_jobs_workspace(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(exits(0)) as (ex, out, runner):
        await finish(ex, out, {"steps": [{"run": ["a"]}, {"run": ["b"]}]})
    first, second = runner.launches
    assert first.cwd is not None
    assert first.cwd == second.cwd  # one workspace per job


async def test_output_over_the_cap_is_marked_truncated(autojump_clock: trio.abc.Clock) -> None:
    async with on(exits(0, "x" * (2 << 20))) as (ex, out, _):
        finished = await finish(ex, out, {"run": ["yes"]})
    assert (len(finished["output"]["stdout"]), finished["output"]["truncated"]) == (1 << 20, True)


@pytest.mark.parametrize(
    ("returncode", "kind", "message"),
    [
        (3, "failure", "make exited with status 3"),
        (-signal.SIGTERM, "terminated", "make was ended by SIGTERM"),
        (-signal.SIGKILL, "killed", "make was ended by SIGKILL"),
        (-signal.SIGXCPU, "resource_failure", "make was ended by SIGXCPU"),
        (-signal.SIGINT, "failure", "make was ended by SIGINT"),
    ],
)
async def test_how_a_process_ended_becomes_the_error_type(
    autojump_clock: trio.abc.Clock, returncode: int, kind: str, message: str
) -> None:
    async with on(exits(returncode, "", "boom")) as (ex, out, _):
        finished = await finish(ex, out, {"run": ["make"]})
    error = finished["error"]
    assert (error["type"], error["message"], error["exit"], error["stderr"]) == (
        kind,
        message,
        returncode,
        "boom",
    )


async def test_a_start_failure_is_a_startup_failure(autojump_clock: trio.abc.Clock) -> None:
    def refuse(launch: Launch) -> ProcessResult:
        raise ProcessStartError(f"no such program: {launch.argv[0]!r}")

    async with on(refuse) as (ex, out, runner):
        finished = await finish(ex, out, {"run": ["nope"]})
    assert (finished["error"]["type"], finished["error"]["message"]) == (
        "startup_failure",
        "no such program: 'nope'",
    )
    assert (runner.stops, runner.live) == ([], [])


async def test_a_cancel_stops_the_process_with_the_steps_grace(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(forever, stop_takes=math.inf) as (ex, out, runner):
        job = await ex.submit({"run": ["sleep", "100"], "grace": 7})
        await trio.sleep(1)
        ex.cancel(job.id)
        finished = await out.finished(job.id)
        assert trio.current_time() == 1 + 7  # `finished` waited for the stop: its whole grace
    assert finished["state"] == "cancelled"
    assert runner.stops == [Stop(runner.launches[0], 7, forced=False)]
    assert runner.live == []


async def test_a_job_timeout_stops_the_process(autojump_clock: trio.abc.Clock) -> None:
    async with on(forever) as (ex, out, runner):
        finished = await finish(ex, out, {"steps": [{"run": ["sleep", "100"]}], "timeout": 5})
    assert finished["state"] == "timed_out"
    assert len(runner.stops) == 1


async def test_kill_stops_every_process_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with on(forever, stop_takes=math.inf, workers=2) as (ex, out, runner):
        jobs = [await ex.submit({"run": ["sleep", "100"], "grace": 60}) for _ in range(2)]
        await trio.sleep(1)
        ex.kill()
        for job in jobs:
            assert (await out.finished(job.id))["state"] == "cancelled"
        assert trio.current_time() == 1  # no grace waited out
    assert runner.killing
    assert runner.live == []
    ex.workspaces.remove_abandoned()  # as `serve` does after its last event: $TMPDIR left clean


async def test_run_callbacks_go_through_the_executors_runner(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(exits(0, "ok")) as (ex, out, runner):
        job = {"steps": [{"value": 1}], "on_finish": [{"run": ["notify-me"], "grace": 1}]}
        job_id = (await ex.submit(job)).id
        callback = await out.wait_for(lambda e: e["event"] == "callback")
    (launch,) = runner.launches
    assert (launch.argv, launch.grace) == (("notify-me",), 1.0)
    assert launch.stdin is not None
    assert json.loads(launch.stdin)["job"] == job_id  # the `finished` event, on stdin
    assert (callback["ok"], callback["stdout"]) == (True, "ok")
