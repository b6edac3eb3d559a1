"""The Runner seam's shared lifecycle (``run_process``) and the fake runner, on the mock clock."""

from __future__ import annotations

import math

import pytest
import trio

from stepline.runners._base import (
    Launch,
    Process,
    ProcessResult,
    ProcessStartError,
    Runner,
    run_process,
)
from stepline.runners._fake import FakeProcess, FakeRunner, Stop
from stepline.runners._local import LocalProcess, LocalRunner


def ok(stdout: str = "", returncode: int = 0) -> ProcessResult:
    return ProcessResult(returncode, stdout, "", False)


def _both_satisfy_the_seam(
    local: LocalRunner, fake: FakeRunner, one: LocalProcess, other: FakeProcess
) -> tuple[list[Runner], list[Process]]:
    """Not a test: mypy (which checks the tests) fails here if either runner leaves the seam."""
    return [local, fake], [one, other]


async def test_the_default_handler_is_cat() -> None:
    runner = FakeRunner()
    assert await run_process(runner, Launch(["cat"], stdin="hi\n")) == ok("hi\n")
    assert await run_process(runner, Launch(["true"])) == ok()
    assert [launch.argv for launch in runner.launches] == [["cat"], ["true"]]


async def test_a_launch_reaches_the_handler_whole() -> None:
    seen: list[Launch] = []

    def handler(launch: Launch) -> ProcessResult:
        seen.append(launch)
        return ok("x")

    launch = Launch(("make", "-j2"), env={"A": "1"}, cwd="/tmp", stdin="in", grace=2.5)
    await run_process(FakeRunner(handler), launch)
    assert seen == [launch]


async def test_an_async_handler_runs_in_trio_time(autojump_clock: trio.abc.Clock) -> None:
    async def handler(launch: Launch) -> ProcessResult:
        await trio.sleep(10)
        return ok("done")

    start = trio.current_time()
    assert (await run_process(FakeRunner(handler), Launch(["x"]))).stdout == "done"
    assert trio.current_time() - start == 10


async def test_a_start_failure_starts_nothing_and_stops_nothing() -> None:
    def handler(launch: Launch) -> ProcessResult:
        raise ProcessStartError(f"no such program: {launch.argv[0]!r}")

    runner = FakeRunner(handler)
    with pytest.raises(ProcessStartError, match="no such program: 'nope'"):
        await run_process(runner, Launch(["nope"]))
    assert (len(runner.launches), runner.stops, runner.live) == (1, [], [])


async def test_output_is_held_to_the_cap() -> None:
    runner = FakeRunner(lambda launch: ProcessResult(0, "héllo", "ok", False))
    result = await run_process(runner, Launch(["x"], output_cap=2))
    assert (result.stdout, result.stderr, result.truncated) == ("h\ufffd", "ok", True)
    result = await run_process(runner, Launch(["x"], output_cap=6))
    assert (result.stdout, result.truncated) == ("héllo", False)


async def test_a_cancel_stops_with_the_launch_grace_then_closes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def forever(launch: Launch) -> ProcessResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    runner = FakeRunner(forever, stop_takes=math.inf)  # ignores its SIGTERM: takes the grace
    launch = Launch(["sleep", "30"], grace=3)
    start = trio.current_time()
    with trio.move_on_after(1):
        await run_process(runner, launch)
    assert trio.current_time() - start == 1 + 3  # the stop ran shielded, its whole grace
    assert runner.stops == [Stop(launch, 3, forced=False)]
    assert runner.live == []


async def test_a_polite_process_stops_before_its_grace(autojump_clock: trio.abc.Clock) -> None:
    async def forever(launch: Launch) -> ProcessResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    runner = FakeRunner(forever, stop_takes=0.5)
    start = trio.current_time()
    with trio.move_on_after(1):
        await run_process(runner, Launch(["x"], grace=3))
    assert trio.current_time() - start == 1.5


async def test_cancelled_propagates_bare() -> None:
    async def forever(launch: Launch) -> ProcessResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    runner = FakeRunner(forever)
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await run_process(runner, Launch(["x"]))
        except trio.Cancelled:
            raise
        except BaseException as exc:  # a group would break `except trio.Cancelled` above us
            pytest.fail(f"expected a bare Cancelled, got {exc!r}")
    assert scope.cancelled_caught


async def test_kill_all_ends_pending_waits_and_processes_started_later(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def forever(launch: Launch) -> ProcessResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    runner = FakeRunner(forever, stop_takes=math.inf)
    results: list[ProcessResult] = []

    async def one() -> None:
        results.append(await run_process(runner, Launch(["x"], grace=30)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert len(runner.live) == 2
        runner.kill_all()
    assert [r.returncode for r in results] == [-9, -9]
    assert (runner.live, runner.stops) == ([], [])
    assert (await run_process(runner, Launch(["x"]))).returncode == -9  # killed on arrival


async def test_kill_all_ends_a_stop_waiting_out_its_grace(autojump_clock: trio.abc.Clock) -> None:
    async def forever(launch: Launch) -> ProcessResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    runner = FakeRunner(forever, stop_takes=math.inf)
    async with trio.open_nursery() as nursery:
        cancelled = trio.CancelScope()

        async def one() -> None:
            with cancelled:
                await run_process(runner, Launch(["x"], grace=30))

        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()  # the stop now waits out its 30 s grace
        await trio.sleep(5)
        assert len(runner.stops) == 1
        assert runner.live
        runner.kill_all()
        await trio.testing.wait_all_tasks_blocked()
        assert runner.live == []
    assert trio.current_time() == 5  # not 30
    assert runner.stops[0].forced is False


async def test_a_stop_after_kill_all_is_forced(autojump_clock: trio.abc.Clock) -> None:
    runner = FakeRunner()
    runner.kill_all()
    process = runner.start(Launch(["x"], grace=30))
    await process.stop(30)
    process.close()
    assert runner.stops == [Stop(Launch(["x"], grace=30), 30, forced=True)]
    assert trio.current_time() == 0
