"""The executor in-process, on trio's mock clock: timing is exact and tests take milliseconds."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from stepline import QueueFull, ShuttingDown, UnknownTemplate
from stepline.engine._interpret import INTERPRETERS
from stepline.spec._model import Log

from ..conftest import running_executor


async def run_one(job: Any, **config: Any) -> dict[str, Any]:
    async with running_executor(**config) as (ex, out):
        record = await ex.submit(job)
        return await out.finished(record.id)


async def test_value_job_succeeds_with_its_output(autojump_clock: trio.abc.Clock) -> None:
    finished = await run_one({"steps": [{"value": 1}, {"value": {"a": [1, 2]}}]})
    assert finished["state"] == "succeeded"
    assert finished["output"] == {"a": [1, 2]}


async def test_fail_names_the_step_path(autojump_clock: trio.abc.Clock) -> None:
    finished = await run_one({"steps": [{"value": 1}, {"seq": [{"fail": "boom", "name": "x"}]}]})
    assert finished["state"] == "failed"
    assert finished["error"] == {
        "type": "fail",
        "message": "boom",
        "step": "steps[1].seq[0]",
        "name": "x",
    }


async def test_job_timeout_is_timed_out(autojump_clock: trio.abc.Clock) -> None:
    finished = await run_one({"steps": [{"sleep": 3600}], "timeout": 5})
    assert finished["state"] == "timed_out"
    assert finished["error"]["type"] == "timeout"
    assert finished["error"]["step"] == "steps[0]"
    assert finished["elapsed"] == pytest.approx(5)


async def test_step_timeout_fails_the_step(autojump_clock: trio.abc.Clock) -> None:
    finished = await run_one({"steps": [{"sleep": 10, "timeout": 2}]})
    assert finished["state"] == "failed"
    assert finished["error"]["type"] == "timeout"
    assert finished["elapsed"] == pytest.approx(2)


async def test_retry_waits_backoff_times_factor(autojump_clock: trio.abc.Clock) -> None:
    job = {"fail": "nope", "retry": {"attempts": 4, "backoff": 1, "factor": 3}}
    finished = await run_one(job)
    assert finished["state"] == "failed"
    assert finished["elapsed"] == pytest.approx(1 + 3 + 9)


async def test_step_timeout_bounds_each_try(autojump_clock: trio.abc.Clock) -> None:
    job = {"sleep": 10, "timeout": 1, "retry": {"attempts": 3, "backoff": 0.5, "factor": 1}}
    finished = await run_one(job)
    assert finished["error"]["type"] == "timeout"
    assert finished["elapsed"] == pytest.approx(3 * 1 + 2 * 0.5)


async def test_job_timeout_bounds_all_retries(autojump_clock: trio.abc.Clock) -> None:
    job = {"steps": [{"sleep": 10, "timeout": 1}], "retry": {"attempts": 100}, "timeout": 4.5}
    finished = await run_one(job)
    assert finished["state"] == "timed_out"
    assert finished["elapsed"] == pytest.approx(4.5)


async def test_par_outputs_in_order_and_runs_concurrently(autojump_clock: trio.abc.Clock) -> None:
    slow = {"seq": [{"sleep": 3}, {"value": "a"}]}
    job = {"par": [slow, {"seq": [{"sleep": 1}, {"value": "b"}]}]}
    finished = await run_one(job)
    assert finished["output"] == ["a", "b"]
    assert finished["elapsed"] == pytest.approx(3)


async def test_par_limit(autojump_clock: trio.abc.Clock) -> None:
    finished = await run_one({"par": [{"sleep": 1}] * 4, "limit": 2})
    assert finished["elapsed"] == pytest.approx(2)


async def test_par_first_failure_cancels_the_rest(autojump_clock: trio.abc.Clock) -> None:
    job = {"par": [{"sleep": 100}, {"seq": [{"sleep": 1}, {"fail": "bad"}]}]}
    finished = await run_one(job)
    assert finished["error"]["step"] == "steps[0].par[1].seq[1]"
    assert finished["elapsed"] == pytest.approx(1)


async def test_race_first_success_wins(autojump_clock: trio.abc.Clock) -> None:
    job = {
        "race": [
            {"seq": [{"sleep": 5}, {"value": "slow"}]},
            {"fail": "quick failure"},
            {"seq": [{"sleep": 2}, {"value": "fast"}]},
        ]
    }
    finished = await run_one(job)
    assert finished["output"] == "fast"
    assert finished["elapsed"] == pytest.approx(2)


async def test_race_all_failing_reports_the_first_failure(autojump_clock: trio.abc.Clock) -> None:
    job = {"race": [{"seq": [{"sleep": 1}, {"fail": "second"}]}, {"fail": "first"}]}
    finished = await run_one(job)
    assert finished["error"]["message"] == "first"


async def test_try_catch(autojump_clock: trio.abc.Clock) -> None:
    assert (await run_one({"try": {"fail": "x"}, "catch": {"value": 2}}))["output"] == 2
    assert (await run_one({"try": {"fail": "x"}}))["output"] is None
    assert (await run_one({"try": {"value": 1}, "catch": {"value": 2}}))["output"] == 1


async def test_log_emits_a_log_event(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [{"log": "hello"}]})
        await out.finished(job.id)
    log = next(e for e in out.events if e["event"] == "log")
    assert log == {
        "event": "log",
        "ts": log["ts"],
        "job": job.id,
        "step": "steps[0]",
        "message": "hello",
    }


async def test_workers_bound_concurrency(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=2) as (ex, out):
        start = trio.current_time()
        jobs = [await ex.submit({"sleep": 1}) for _ in range(5)]
        for job in jobs:
            await out.finished(job.id)
        assert trio.current_time() - start == pytest.approx(3)


async def test_cancel_queued_and_running(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1) as (ex, out):
        running = await ex.submit({"sleep": 100})
        queued = await ex.submit({"sleep": 100})
        await out.wait_for(lambda e: e["event"] == "started")
        ex.cancel(queued.id)
        ex.cancel(running.id)
        a, b = await out.finished(running.id), await out.finished(queued.id)
    assert a["state"] == b["state"] == "cancelled"
    assert b["elapsed"] == 0
    assert out.of(queued.id) == ["accepted", "cancelling", "finished"]
    assert out.of(running.id) == ["accepted", "started", "cancelling", "finished"]
    assert a["error"]["step"] == "steps[0]"


async def test_cancel_during_retry_backoff(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit({"fail": "x", "retry": {"attempts": 5, "backoff": 60}})
        await trio.sleep(30)  # inside the first backoff
        ex.cancel(job.id)
        finished = await out.finished(job.id)
    assert finished["state"] == "cancelled"
    assert finished["elapsed"] == pytest.approx(30)


async def test_heartbeat_progress(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(heartbeat=1.0) as (ex, out):
        job = await ex.submit({"seq": [{"sleep": 3.5}]})
        await out.finished(job.id)
    progress = [e for e in out.events if e["event"] == "progress"]
    assert len(progress) == 3
    assert progress[0]["step"] == "steps[0].seq[0]"


async def test_queue_full_reject(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1, queue_size=2, on_full="reject") as (ex, out):
        await ex.submit({"sleep": 10})
        await out.wait_for(lambda e: e["event"] == "started")
        await ex.submit({"sleep": 1})
        await ex.submit({"sleep": 1})
        with pytest.raises(QueueFull):
            await ex.submit({"sleep": 1})


async def test_queue_full_blocks_until_a_slot_frees(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1, queue_size=1) as (ex, out):
        await ex.submit({"sleep": 10})
        await out.wait_for(lambda e: e["event"] == "started")
        await ex.submit({"sleep": 1})
        before = trio.current_time()
        await ex.submit({"sleep": 1})  # waits for the first job to end
        assert trio.current_time() - before == pytest.approx(10)
        assert ex.table.queued_count <= 1


async def test_cancelled_queued_job_frees_its_slot(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1, queue_size=2, on_full="reject") as (ex, out):
        blocker = await ex.submit({"sleep": 100})
        await out.wait_for(lambda e: e["event"] == "started")
        a = await ex.submit({"value": "a"})
        await ex.submit({"value": "b"})
        ex.cancel(a.id)
        c = await ex.submit({"value": "c"})  # would be queue_full without compaction
        ex.cancel(blocker.id)
        assert (await out.finished(c.id))["output"] == "c"


async def test_shutdown_drain_finishes_everything(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1) as (ex, out):
        jobs = [await ex.submit({"sleep": 1}) for _ in range(3)]
        ex.shutdown("drain")
        with pytest.raises(ShuttingDown):
            await ex.submit({"value": 1})
        await ex.closed.wait()
    assert [(await out.finished(j.id))["state"] for j in jobs] == ["succeeded"] * 3


async def test_shutdown_cancel_cancels_everything(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1) as (ex, out):
        jobs = [await ex.submit({"sleep": 100}) for _ in range(3)]
        await out.wait_for(lambda e: e["event"] == "started")
        ex.shutdown("cancel")
        await ex.closed.wait()
    states = [(await out.finished(j.id))["state"] for j in jobs]
    assert states == ["cancelled"] * 3
    assert [e["event"] for e in out.events].count("finished") == 3


async def test_templates_with_params(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        ex.define("greet", {"params": {"who": "world"}, "steps": [{"value": "hi ${params.who}"}]})
        a = await ex.submit(template="greet")
        b = await ex.submit(template="greet", params={"who": "you"})
        c = await ex.submit({"steps": [{"use": "greet", "with": {"who": "use"}}]})
        with pytest.raises(UnknownTemplate):
            await ex.submit(template="nope")
        outputs = [(await out.finished(j.id))["output"] for j in (a, b, c)]
    assert outputs == ["hi world", "hi you", "hi use"]


async def test_a_bug_in_a_step_becomes_an_internal_failure(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(step: Log, ctx: Any) -> Any:
        raise ZeroDivisionError("oops")

    monkeypatch.setitem(INTERPRETERS, Log, broken)
    async with running_executor() as (ex, out):
        job = await ex.submit({"par": [{"log": "x"}, {"sleep": 5}]})
        finished = await out.finished(job.id)
        after = await ex.submit({"sleep": 1})
        assert (await out.finished(after.id))["state"] == "succeeded"
    assert finished["state"] == "failed"
    assert finished["error"]["type"] == "internal"
    assert "ZeroDivisionError" in finished["error"]["message"]


async def test_trace_emits_step_events(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(trace=True) as (ex, out):
        job = await ex.submit({"seq": [{"value": 1, "name": "one"}]})
        await out.finished(job.id)
    steps = [(e["step"], e["status"]) for e in out.events if e["event"] == "step"]
    assert steps == [
        ("steps[0]", "started"),
        ("steps[0].seq[0]", "started"),
        ("steps[0].seq[0]", "succeeded"),
        ("steps[0]", "succeeded"),
    ]


async def test_reject_gives_idle_workers_a_turn_before_refusing(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Regression: a burst of trivial submits, made without yielding (as the reader does within a
    chunk), was refused almost entirely while the workers sat idle."""
    refused = 0
    async with running_executor(workers=4, queue_size=8, on_full="reject") as (ex, _):
        for i in range(300):
            try:
                await ex.submit({"value": i})
            except QueueFull:
                refused += 1
    assert refused < 150  # before the fix: 292 of 300


def test_reject_still_refuses_when_workers_are_busy() -> None:
    async def main() -> int:
        refused = 0
        async with running_executor(workers=1, queue_size=2, on_full="reject") as (ex, _):
            for _ in range(10):
                try:
                    await ex.submit({"sleep": 5})
                except QueueFull:
                    refused += 1
            ex.shutdown("cancel")
        return refused

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == 7
