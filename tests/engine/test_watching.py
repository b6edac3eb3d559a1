"""Watching a job from the engine: `output` events, the `logs` store, `retry` events and the
tails a failed `run` step carries; on the mock clock with the fake runner (no processes)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from stepline import Config, Executor
from stepline.engine._logs import JobLog
from stepline.engine._output import MAX_LINE, LineSplitter, StepOutput
from stepline.runners._base import Launch, ProcessResult
from stepline.runners._fake import FakeRunner, Handler, write
from stepline.triggers._attach import Triggers

from ..conftest import MemoryOutbox

Event = dict[str, Any]


class GatedOutbox(MemoryOutbox):
    """A memory outbox the test congests and relieves by hand."""

    def __init__(self) -> None:
        super().__init__()
        self._relieved = trio.Event()

    def congest(self) -> None:
        self.congested = True
        self._relieved = trio.Event()

    def relieve(self) -> None:
        self.congested = False
        self._relieved.set()

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.congested:
            await self._relieved.wait()


@asynccontextmanager
async def on(
    handler: Handler, outbox: MemoryOutbox | None = None, **config: Any
) -> AsyncIterator[tuple[Executor, MemoryOutbox]]:
    out = outbox if outbox is not None else MemoryOutbox()
    ex = Executor(Config(heartbeat=0, **config), out, runner=FakeRunner(handler))
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        yield ex, out
        ex.shutdown("drain")


def exits(code: int, stdout: str = "", stderr: str = "") -> Handler:
    return lambda launch: ProcessResult(code, stdout, stderr, False)


async def finish(ex: Executor, out: MemoryOutbox, job: Any) -> Event:
    return await out.finished((await ex.submit(job)).id)


def lines_of(out: MemoryOutbox, job: str) -> list[tuple[str, str, str]]:
    return [
        (e["step"], e["stream"], e["line"])
        for e in out.events
        if e["event"] == "output" and e["job"] == job
    ]


# -- output events ------------------------------------------------------------------------------


async def test_a_streamed_step_emits_each_line_and_its_result_is_unchanged(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(exits(0, "a\nb\n\nlast", "oops\n")) as (ex, out):
        finished = await finish(ex, out, {"run": ["x"], "stream": True})
    assert lines_of(out, "j1") == [
        ("steps[0]", "stdout", "a"),
        ("steps[0]", "stdout", "b"),
        ("steps[0]", "stdout", ""),
        ("steps[0]", "stdout", "last"),  # the final partial line, flushed at exit
        ("steps[0]", "stderr", "oops"),
    ]
    assert finished["output"] == {"exit": 0, "stdout": "a\nb\n\nlast", "stderr": "oops\n"}
    kinds = out.of("j1")
    assert kinds.index("finished") > max(i for i, k in enumerate(kinds) if k == "output")


async def test_lines_come_out_as_they_are_written(autojump_clock: trio.abc.Clock) -> None:
    async def talker(launch: Launch) -> ProcessResult:
        await write(launch, "stdout", "one\ntw")
        await trio.sleep(5)
        await write(launch, "stdout", "o\n")
        await write(launch, "stderr", "three\n")
        await trio.sleep(5)
        return ProcessResult(0, "one\ntwo\n", "three\n", False)

    async with on(talker) as (ex, out):
        await ex.submit({"run": ["x"], "stream": True, "cwd": "/"})
        first = await out.wait_for(lambda e: e["event"] == "output")
        assert (first["line"], trio.current_time()) == ("one", 0)
        second = await out.wait_for(lambda e: e["event"] == "output" and e["line"] == "two")
        assert trio.current_time() == 5
        await out.finished("j1")
    assert second["step"] == "steps[0]"
    assert [line for _, _, line in lines_of(out, "j1")] == ["one", "two", "three"]


@pytest.mark.parametrize(
    ("job", "default", "streamed"),
    [
        ({"steps": [{"run": ["x"]}]}, False, False),
        ({"steps": [{"run": ["x"]}], "stream": True}, False, True),
        ({"steps": [{"run": ["x"], "stream": False}], "stream": True}, False, False),
        ({"steps": [{"run": ["x"]}]}, True, True),
        ({"steps": [{"run": ["x"]}], "stream": False}, True, False),
        ({"tasks": {"t": {"steps": [{"run": ["x"]}]}}, "stream": True}, False, True),
    ],
)
async def test_the_nearest_stream_setting_wins(
    autojump_clock: trio.abc.Clock, job: Any, default: bool, streamed: bool
) -> None:
    async with on(exits(0, "hi\n"), stream=default) as (ex, out):
        await finish(ex, out, job)
    assert bool(lines_of(out, "j1")) is streamed
    assert ex.logs("j1")["lines"][0]["line"] == "hi"  # kept whether streamed or not


async def test_a_stream_value_must_be_a_boolean(autojump_clock: trio.abc.Clock) -> None:
    async with on(exits(0)) as (ex, _):
        for job in ({"run": ["x"], "stream": 1}, {"steps": [{"value": 1}], "stream": "yes"}):
            with pytest.raises(Exception, match="expected true or false"):
                await ex.submit(job)


async def test_a_congested_outbox_holds_the_process_back_and_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    written: list[int] = []

    async def chatty(launch: Launch) -> ProcessResult:
        for n in range(100):
            await write(launch, "stdout", f"{n}\n")
            written.append(n)
        return ProcessResult(0, "", "", False)

    outbox = GatedOutbox()
    async with on(chatty, outbox) as (ex, out):
        outbox.congest()
        await ex.submit({"run": ["x"], "stream": True, "cwd": "/"})
        await trio.sleep(60)
        # the first line went into the congested outbox's backlog; the writer now waits
        assert written == []
        assert lines_of(out, "j1") == []
        outbox.relieve()
        await out.finished("j1")
    assert [line for _, _, line in lines_of(out, "j1")] == [str(n) for n in range(100)]
    assert written == list(range(100))


# -- splitting ---------------------------------------------------------------------------------


def test_long_lines_are_cut_into_pieces_at_character_boundaries() -> None:
    splitter = LineSplitter()
    long = "é" * MAX_LINE  # two bytes each: 128 KiB
    lines = splitter.lines(long.encode() + b"\nshort\n")
    assert [len(line) for line in lines] == [MAX_LINE, MAX_LINE, 6 - 1]
    assert b"".join(lines[:2]).decode() == long  # no character cut in two
    assert splitter.lines(b"x" * (MAX_LINE + 10)) == [b"x" * MAX_LINE]  # a partial that grew
    assert splitter.end() == [b"x" * 10]
    assert splitter.end() == []


def test_a_flood_that_is_not_streamed_keeps_its_last_lines_and_counts_the_rest() -> None:
    log = JobLog()
    sink = StepOutput("j1", "s", log, None)
    for chunk in range(10):  # 300,000 lines in chunks of 30,000: each supersedes the last
        sink.write("stdout", b"".join(b"%d\n" % (chunk * 30_000 + n) for n in range(30_000)))
    sink.write("stdout", b"tail")
    sink.eof("stdout")
    # No bound on the page (it compares as an int does; typed int for the real callers).
    lines, following = log.page(0, max_chars=math.inf)  # type: ignore[arg-type]
    assert log.count == 300_001 == following
    assert len(lines) == log.max_lines
    assert [line["line"] for line in lines[-2:]] == ["299999", "tail"]
    assert [line["n"] for line in lines[-2:]] == [300_000, 300_001]
    assert log.trimmed == 300_001 - log.max_lines


def test_lines_are_numbered_in_the_order_read_across_streams_in_a_flood() -> None:
    log = JobLog()
    sink = StepOutput("j1", "s", log, None)
    sink.write("stdout", b"".join(b"out%d\n" % n for n in range(20_000)))  # held: a flood
    sink.write("stderr", b"err after the flood\n")
    sink.write("stdout", b"out again\n")
    sink.eof("stdout")
    sink.eof("stderr")
    lines, _ = log.page(log.count - 3, max_chars=math.inf)  # type: ignore[arg-type]  # unbounded
    assert [(line["n"], line["stream"], line["line"]) for line in lines] == [
        (20_000, "stdout", "out19999"),
        (20_001, "stderr", "err after the flood"),
        (20_002, "stdout", "out again"),
    ]


def test_a_held_flood_is_split_when_somebody_reads_the_log() -> None:
    log = JobLog()
    sink = StepOutput("j1", "s", log, None)
    sink.write("stdout", b"a\n" * 20_000 + b"b")
    lines, following = log.page(0)
    assert lines[-1]["line"] == "a"
    assert following == log.count == 20_000
    sink.write("stdout", b"c\n")
    sink.eof("stdout")
    assert log.page(following)[0][0]["line"] == "bc"


# -- logs --------------------------------------------------------------------------------------


async def test_logs_pages_through_a_jobs_lines(autojump_clock: trio.abc.Clock) -> None:
    def numbers_then_e(launch: Launch) -> ProcessResult:
        if launch.argv == ("a",):
            return ProcessResult(0, "".join(f"{n}\n" for n in range(1, 5001)), "", False)
        return ProcessResult(0, "", "e\n", False)

    async with on(numbers_then_e) as (ex, out):
        job = {"steps": [{"run": ["a"]}, {"run": ["b"]}]}
        await finish(ex, out, job)
        collected: list[dict[str, Any]] = []
        after, pages = 0, 0
        while True:
            reply = ex.logs("j1", after)
            collected += reply["lines"]
            after, pages = reply["next"], pages + 1
            if reply["done"]:
                break
    assert pages == 1  # 5,001 short lines fit one page
    assert [line["n"] for line in collected] == list(range(1, 5002))
    assert collected[0]["step"] == "steps[0]"
    assert collected[-1]["step"] == "steps[1]"
    assert collected[-1]["stream"] == "stderr"
    assert ex.logs("j1", 5000)["lines"][0]["line"] == "e"
    empty = {"job": "j1", "lines": [], "next": 5001, "trimmed": 0, "done": True}
    assert ex.logs("j1", 5001) == empty


async def test_logs_keeps_the_last_lines_and_counts_the_trimmed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(exits(0, "".join(f"{n}\n" for n in range(25_000)))) as (ex, out):
        await finish(ex, out, {"run": ["a"]})
        reply = ex.logs("j1")
    assert reply["trimmed"] == 15_000
    assert reply["lines"][0] == {**reply["lines"][0], "n": 15_001, "line": "15000"}


async def test_logs_of_a_running_job_is_not_done(autojump_clock: trio.abc.Clock) -> None:
    async def slow(launch: Launch) -> ProcessResult:
        await write(launch, "stdout", "begun\n")
        await trio.sleep(10)
        return ProcessResult(0, "", "", False)

    async with on(slow) as (ex, out):
        await ex.submit({"run": ["a"], "cwd": "/"})  # no workspace: made in a real thread
        await trio.sleep(1)
        reply = ex.logs("j1")
        assert (reply["lines"][0]["line"], reply["next"], reply["done"]) == ("begun", 1, False)
        assert ex.logs("j1", 1) == {**reply, "lines": [], "next": 1}  # nothing new yet
        await out.finished("j1")
        assert ex.logs("j1", 1)["done"] is True
        assert ex.logs("j1")["done"] is True  # this reply holds every line there is
        await finish(ex, out, {"value": 1})
        assert ex.logs("j2") == {"job": "j2", "lines": [], "next": 0, "trimmed": 0, "done": True}


async def test_kept_logs_count_against_the_byte_budget(autojump_clock: trio.abc.Clock) -> None:
    text = "".join(f"{n:0100}\n" for n in range(5000))  # about 500 KiB of lines
    async with on(exits(0, text), keep_bytes=4 << 20) as (ex, out):
        for _ in range(4):
            await finish(ex, out, {"run": ["a"]})
        dropped = ex.logs("j1")
        kept = ex.logs("j4")
    assert (dropped["lines"], dropped["trimmed"], dropped["next"]) == ([], 5000, 5000)
    assert kept["trimmed"] == 0
    assert len(kept["lines"]) > 0


# -- retries and failures ----------------------------------------------------------------------


async def test_each_failed_try_that_is_retried_is_announced(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(exits(2, "out\n", "err\n")) as (ex, out):
        step = {"run": ["t"], "retry": {"attempts": 3, "backoff": 1, "factor": 3}}
        finished = await finish(ex, out, {"steps": [step]})
    retries = [e for e in out.events if e["event"] == "retry"]
    assert [(e["step"], e["attempt"], e["attempts"], e["delay"]) for e in retries] == [
        ("steps[0]", 1, 3, 1.0),
        ("steps[0]", 2, 3, 3.0),
    ]
    assert retries[0]["error"]["type"] == "failure"
    assert "attempts" not in retries[0]["error"]
    error = finished["error"]
    assert (error["attempts"], error["stdout"], error["stderr"]) == (3, "out\n", "err\n")
    assert finished["elapsed"] == 4.0


async def test_a_job_level_retry_is_announced_with_an_empty_step(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on(exits(0)) as (ex, out):
        job = {"steps": [{"fail": "no"}], "retry": {"attempts": 2}}
        finished = await finish(ex, out, job)
    (retry,) = [e for e in out.events if e["event"] == "retry"]
    assert (retry["step"], retry["attempt"], retry["error"]["step"]) == ("", 1, "steps[0]")
    assert finished["error"]["attempts"] == 2


async def test_a_step_that_succeeds_on_a_retry_has_one_announcement(
    autojump_clock: trio.abc.Clock,
) -> None:
    tries: list[int] = []

    def flaky(launch: Launch) -> ProcessResult:
        tries.append(1)
        return ProcessResult(1 if len(tries) == 1 else 0, "", "", False)

    async with on(flaky) as (ex, out):
        finished = await finish(ex, out, {"run": ["t"], "retry": {"attempts": 5}})
    assert finished["state"] == "succeeded"
    assert out.of("j1").count("retry") == 1


async def test_a_failure_carries_the_tails_of_both_streams(autojump_clock: trio.abc.Clock) -> None:
    out_text = "o" * 5000 + "END"
    async with on(exits(1, out_text, "bad\n")) as (ex, out):
        finished = await finish(ex, out, {"run": ["pytest"]})
    error = finished["error"]
    assert error["stdout"] == out_text[-4096:]
    assert error["stdout"].endswith("END")
    assert error["stderr"] == "bad\n"


async def test_a_timed_out_run_step_carries_what_it_wrote(autojump_clock: trio.abc.Clock) -> None:
    async def hangs(launch: Launch) -> ProcessResult:
        await write(launch, "stdout", "collected 3 items\n")
        await write(launch, "stderr", "warning\n")
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with on(hangs) as (ex, out):
        finished = await finish(ex, out, {"run": ["pytest"], "timeout": 5})
    error = finished["error"]
    assert error["type"] == "timeout"
    assert (error["stdout"], error["stderr"]) == ("collected 3 items", "warning")


# -- status: times, stopping, filters ----------------------------------------------------------


async def forever(launch: Launch) -> ProcessResult:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def on_slow_stops(handler: Handler, stop_takes: float, **config: Any) -> Any:
    """Like :func:`on`, with processes that take ``stop_takes`` seconds to stop (at most their
    grace), and the runner at hand."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[tuple[Executor, MemoryOutbox, FakeRunner]]:
        out = MemoryOutbox()
        runner = FakeRunner(handler, stop_takes=stop_takes)
        ex = Executor(Config(heartbeat=0, **config), out, runner=runner)
        Triggers.attach(ex)
        async with trio.open_nursery() as nursery:
            await nursery.start(ex.run)
            yield ex, out, runner
            ex.shutdown("drain")

    return opened()


async def test_a_job_being_stopped_says_so_until_it_has_finished(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on_slow_stops(forever, math.inf) as (ex, out, runner):
        await ex.submit({"run": ["x"], "cwd": "/", "grace": 30})
        await trio.sleep(1)
        assert "stopping" not in ex.table.records("j1")[0]
        ex.cancel("j1")
        await trio.sleep(10)
        (record,) = ex.table.records("j1")
        assert (record["state"], record["stopping"]) == ("running", True)
        finished = await out.finished("j1")
        assert trio.current_time() == 31  # the stop took the whole grace
        assert "stopping" not in ex.table.records("j1")[0]
    assert finished["state"] == "cancelled"
    assert [stop.grace for stop in runner.stops] == [30.0]


async def test_a_timed_out_job_is_stopping_too(autojump_clock: trio.abc.Clock) -> None:
    async with on_slow_stops(forever, math.inf) as (ex, out, _):
        await ex.submit({"steps": [{"run": ["x"], "cwd": "/", "grace": 30}], "timeout": 5})
        await trio.sleep(10)
        assert ex.table.records("j1")[0]["stopping"] is True
        assert (await out.finished("j1"))["state"] == "timed_out"


@pytest.mark.parametrize(("options", "grace"), [({"force": True}, 0.0), ({"grace": 2.5}, 2.5)])
async def test_a_cancel_may_shorten_the_grace(
    autojump_clock: trio.abc.Clock, options: dict[str, Any], grace: float
) -> None:
    async with on_slow_stops(forever, math.inf) as (ex, out, runner):
        await ex.submit({"run": ["x"], "cwd": "/", "grace": 60})
        await trio.sleep(1)
        ex.cancel("j1", **options)
        await out.finished("j1")
        assert trio.current_time() == 1 + grace
    assert [stop.grace for stop in runner.stops] == [grace]


async def test_a_second_cancel_keeps_the_grace_of_a_stop_under_way(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on_slow_stops(forever, math.inf) as (ex, out, runner):
        await ex.submit({"run": ["x"], "cwd": "/", "grace": 60})
        await trio.sleep(1)
        ex.cancel("j1", grace=10)
        await trio.sleep(1)
        ex.cancel("j1", grace=1)
        await out.finished("j1")
        assert trio.current_time() == 11
    assert [stop.grace for stop in runner.stops] == [10.0]


async def test_a_forced_cancel_cuts_a_stop_under_way_short(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with on_slow_stops(forever, math.inf) as (ex, out, runner):
        await ex.submit({"run": ["x"], "cwd": "/", "grace": 60})
        await trio.sleep(1)
        ex.cancel("j1")
        await trio.sleep(1)
        assert ex.table.records("j1")[0]["stopping"] is True
        ex.cancel("j1", force=True)
        assert (await out.finished("j1"))["state"] == "cancelled"
        assert trio.current_time() == 2  # not 61: the SIGKILL came with the force
    assert [stop.grace for stop in runner.stops] == [60.0]


async def test_records_carry_their_times(autojump_clock: trio.abc.Clock) -> None:
    async with on(exits(0), workers=2) as (ex, out):
        await ex.submit({"sleep": 5})
        await ex.submit({"sleep": 5})
        await ex.submit({"sleep": 5})
        await trio.sleep(1)
        ex.cancel("j3")
        running = ex.table.records("j1")[0]
        assert running["created"] is not None
        assert running["started"] >= running["created"]
        assert running["ended"] is None
        await out.finished("j1")
        done = ex.table.records("j1")[0]
        assert done["ended"] >= done["started"]
    cancelled = ex.table.records("j3")[0]
    assert (cancelled["started"], cancelled["ended"] is not None) == (None, True)


async def test_status_filters_by_state_name_time_and_count(autojump_clock: trio.abc.Clock) -> None:
    from stepline.engine._jobs import StatusFilter

    async with on(exits(0), workers=1) as (ex, out):
        for job, name in (({"value": 1}, "a"), ({"fail": "x"}, "b"), ({"value": 3}, "a")):
            await out.finished((await ex.submit(job, name=name)).id)
        await ex.submit({"sleep": 100}, name="a")

        def ids(**select: Any) -> list[str]:
            return [r["job"] for r in ex.table.records(None, StatusFilter.of(**select))]

        assert ids(state="succeeded") == ["j1", "j3"]
        assert ids(state=["failed", "running", "queued"]) == ["j2", "j4"]
        assert ids(name="a") == ["j1", "j3", "j4"]
        assert ids(name="a", limit=2) == ["j4", "j3"]  # the most recent first
        assert ids(limit=0) == []
        since = ex.table.get("j3").created
        assert ids(since=since) == ["j3", "j4"]
        assert StatusFilter.of() is None
        for bad in ("done", ["succeeded", 1], {"state": "x"}):
            with pytest.raises(Exception, match="state"):
                StatusFilter.of(state=bad)
        ex.cancel("j4")


# -- partial results ---------------------------------------------------------------------------

GRAPH = {
    "tasks": {
        "lint": {"steps": [{"value": "clean"}]},
        "build": {"steps": [{"value": {"artifact": "a.whl"}}]},
        "test": {"needs": "build", "steps": [{"fail": "2 failed"}]},
        "deploy": {"needs": "test", "steps": [{"value": "shipped"}]},
        "report": {"needs": "test", "if": "failure", "steps": [{"value": "mailed"}]},
    }
}


async def test_a_failed_graph_keeps_what_its_tasks_output(autojump_clock: trio.abc.Clock) -> None:
    async with on(exits(0)) as (ex, out):
        failed = await finish(ex, out, GRAPH)
        succeeded = await finish(ex, out, {"tasks": {"a": {"steps": [{"value": 1}]}}})
    assert failed["state"] == "failed"
    expected = {"lint": "clean", "build": {"artifact": "a.whl"}, "report": "mailed"}
    assert failed["partial"] == expected
    assert ex.table.records("j1")[0]["partial"] == failed["partial"]
    assert "partial" not in succeeded
    assert succeeded["output"] == {"a": 1}


async def test_a_cancelled_graph_keeps_what_finished_before(autojump_clock: trio.abc.Clock) -> None:
    graph = {"tasks": {"fast": {"steps": [{"value": 1}]}, "slow": {"steps": [{"sleep": 60}]}}}
    async with on(exits(0)) as (ex, out):
        await ex.submit(graph)
        await trio.sleep(1)
        ex.cancel("j1")
        finished = await out.finished("j1")
        steps_job = await finish(ex, out, {"steps": [{"fail": "x"}]})
    assert (finished["state"], finished["partial"]) == ("cancelled", {"fast": 1})
    assert "partial" not in steps_job


async def test_partial_is_the_last_try_of_a_retried_graph(autojump_clock: trio.abc.Clock) -> None:
    async with on(exits(0)) as (ex, out):
        finished = await finish(ex, out, {**GRAPH, "retry": {"attempts": 2}})
    assert sorted(finished["partial"]) == ["build", "lint", "report"]
    assert out.of("j1").count("retry") == 1
