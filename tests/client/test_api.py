"""The in-process API, ``stepline.open_executor``, on trio's mock clock: exact timings."""

from __future__ import annotations

import inspect
from typing import Any

import attrs
import pytest
import trio
from trio.testing import MockClock

import stepline
from stepline import Config, InvalidJob, JobFailed, JobState, QueueFull, ShuttingDown
from stepline import steps as s


async def kinds(job: stepline.JobHandle) -> list[str]:
    return [ev["event"] async for ev in job.events()]


async def test_wait_returns_the_output(autojump_clock: MockClock) -> None:
    async with stepline.open_executor() as ex:
        job = await ex.submit(s.job(s.value(1), s.value({"a": [1, 2]}), name="n"))
        assert await job.wait() == {"a": [1, 2]}
        assert job.state is JobState.SUCCEEDED
        assert job.done
        assert job.name == "n"
        assert repr(job) == f"<JobHandle {job.id} succeeded>"


async def test_a_failed_job_raises_job_failed_with_state_and_error(
    autojump_clock: MockClock,
) -> None:
    async with stepline.open_executor() as ex:
        job = await ex.submit(s.job(s.value(1), s.named(s.fail("boom"), "x")))
        with pytest.raises(JobFailed) as caught:
            await job.wait()
    failed = caught.value
    assert isinstance(failed, stepline.SteplineError)
    assert failed.code == "job_failed"
    assert failed.job == job.id
    assert failed.state is JobState.FAILED
    assert failed.error == {"type": "fail", "message": "boom", "step": "steps[1]", "name": "x"}
    assert str(failed) == f"job {job.id} failed: fail at steps[1]: boom"


async def test_a_job_timeout_raises_job_failed_timed_out(autojump_clock: MockClock) -> None:
    async with stepline.open_executor() as ex:
        job = await ex.submit(s.job(s.sleep(3600), timeout=5))
        with pytest.raises(JobFailed) as caught:
            await job.wait()
    assert caught.value.state is JobState.TIMED_OUT
    assert caught.value.elapsed == pytest.approx(5)
    assert job.elapsed == pytest.approx(5)


async def test_events_run_from_accepted_to_finished_and_each_call_starts_over(
    autojump_clock: MockClock,
) -> None:
    async with stepline.open_executor(heartbeat=0) as ex:
        job = await ex.submit(s.job(s.log("one"), s.sleep(1), s.log("two")))
        live = [ev async for ev in job.events()]  # read while the job runs
        again = [ev async for ev in job.events()]  # and once more after it finished
    assert [e["event"] for e in live] == ["accepted", "started", "log", "log", "finished"]
    assert again == live
    assert [e["message"] for e in live if e["event"] == "log"] == ["one", "two"]
    assert {e["job"] for e in live} == {job.id}


async def test_events_are_routed_to_their_own_job_only(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(workers=2) as ex:
        a = await ex.submit(s.job(s.log("a"), s.sleep(2)))
        b = await ex.submit(s.job(s.sleep(1), s.log("b")))
        logs_a = [e["message"] async for e in a.events() if e["event"] == "log"]
        logs_b = [e["message"] async for e in b.events() if e["event"] == "log"]
    assert (logs_a, logs_b) == (["a"], ["b"])


async def test_heartbeats_and_trace_events_reach_the_job_stream(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(heartbeat=1, trace=True) as ex:
        job = await ex.submit(s.job(s.sleep(3.5)))
        events = await kinds(job)
    assert events.count("progress") == 3
    assert "step" in events
    assert events[0] == "accepted"
    assert events[-1] == "finished"


async def test_cancel_a_running_job_then_a_finished_one(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(heartbeat=0) as ex:
        job = await ex.submit(s.job(s.sleep(3600)))
        await trio.sleep(2)
        assert await job.cancel() is True
        assert job.state is JobState.CANCELLED
        assert job.elapsed == pytest.approx(2)
        assert await job.cancel() is False
        with pytest.raises(JobFailed) as caught:
            await job.wait()
    assert caught.value.state is JobState.CANCELLED
    assert await kinds(job) == ["accepted", "started", "cancelling", "finished"]


async def test_cancel_a_queued_job(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(workers=1) as ex:
        first = await ex.submit(s.job(s.sleep(10)))
        queued = await ex.submit(s.job(s.value("never")))
        assert queued.state is JobState.QUEUED
        assert await queued.cancel() is True
        assert await kinds(queued) == ["accepted", "cancelling", "finished"]
        assert queued.elapsed == 0
        assert await first.wait() is None


async def test_workers_bound_how_many_jobs_run_at_once(autojump_clock: MockClock) -> None:
    peak = 0
    async with stepline.open_executor(workers=2) as ex:
        start = trio.current_time()
        jobs = [await ex.submit(s.job(s.sleep(1))) for _ in range(5)]
        while not all(job.done for job in jobs):
            peak = max(peak, (await ex.stats())["running"])
            await trio.sleep(0.1)
        took = trio.current_time() - start
    assert peak == 2
    assert took == pytest.approx(3, abs=0.15)  # three waves: 2 + 2 + 1


async def test_leaving_the_block_normally_drains(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(workers=1) as ex:
        jobs = [await ex.submit(s.job(s.sleep(5), s.value(i))) for i in range(3)]
    assert [job.state for job in jobs] == [JobState.SUCCEEDED] * 3
    assert [await job.wait() for job in jobs] == [0, 1, 2]


async def fail_with_jobs_running(jobs: list[stepline.JobHandle]) -> None:
    async with stepline.open_executor(workers=1) as ex:
        jobs.append(await ex.submit(s.job(s.sleep(3600))))
        jobs.append(await ex.submit(s.job(s.sleep(3600))))
        await trio.sleep(1)
        raise KeyError("boom")


async def test_an_exception_cancels_every_job_and_is_raised_as_itself(
    autojump_clock: MockClock,
) -> None:
    jobs: list[stepline.JobHandle] = []
    with pytest.raises(KeyError, match="boom"):
        await fail_with_jobs_running(jobs)
    running, queued = jobs
    assert running.state is JobState.CANCELLED
    assert queued.state is JobState.CANCELLED


async def test_an_outer_cancellation_cancels_every_job(autojump_clock: MockClock) -> None:
    with trio.move_on_after(3) as scope:
        async with stepline.open_executor() as ex:
            job = await ex.submit(s.job(s.sleep(3600)))
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert job.state is JobState.CANCELLED


async def test_command_errors_are_raised_as_their_own_types(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(workers=1, queue_size=1, on_full="reject") as ex:
        with pytest.raises(InvalidJob, match=r"steps\[0\]\.seq\[1\]\.sleep"):
            await ex.submit(s.job(s.seq(s.value(1), s.sleep(-1))))
        await ex.submit(s.job(s.sleep(10)))  # running
        await trio.lowlevel.checkpoint()
        await ex.submit(s.job(s.sleep(10)))  # queued: the queue is full now
        with pytest.raises(QueueFull):
            await ex.submit(s.job(s.sleep(10)))
    with pytest.raises(ShuttingDown):
        await ex.submit(s.job(s.value(1)))


async def test_define_status_and_stats(autojump_clock: MockClock) -> None:
    async with stepline.open_executor(workers=2, queue_size=8) as ex:
        greet = {"params": {"who": "you"}, "steps": [{"value": "hi ${params.who}"}]}
        await ex.define("greet", greet)
        by_template = await ex.submit(template="greet", params={"who": "me"}, name="t")
        by_use = await ex.submit(s.job(s.use("greet", who="use")))
        assert await by_template.wait() == "hi me"
        assert await by_use.wait() == "hi use"
        (record,) = await ex.status(by_template)
        assert record == {
            "job": by_template.id,
            "state": "succeeded",
            "name": "t",
            "elapsed": 0.0,
            "created": record["created"],
            "started": record["started"],
            "ended": record["ended"],
            "output": "hi me",
        }
        assert record["created"] <= record["started"] <= record["ended"]
        assert len(await ex.status()) == 2
        assert (await ex.status(by_use.id))[0]["output"] == "hi use"
        stats = await ex.stats()
    assert stats == {
        "queued": 0,
        "running": 0,
        "workers": 2,
        "queue_size": 8,
        "finished": {"succeeded": 2, "failed": 0, "cancelled": 0, "timed_out": 0},
    }


async def test_a_chatty_job_keeps_its_lifecycle_and_reports_the_gap(
    autojump_clock: MockClock,
) -> None:
    async with stepline.open_executor(history=8) as ex:
        job = await ex.submit(s.job(*[s.log(str(i)) for i in range(50)]))
        assert await job.wait() is None
        events = [ev async for ev in job.events()]
    assert [e["event"] for e in events] == [
        "accepted",
        "started",
        "dropped",
        "log",
        "log",
        "log",
        "log",
        "log",
        "finished",
    ]
    assert events[2]["count"] == 45
    assert [e["message"] for e in events if e["event"] == "log"] == ["45", "46", "47", "48", "49"]


async def test_keywords_map_onto_config(autojump_clock: MockClock) -> None:
    settings: dict[str, Any] = {
        "workers": 3,
        "queue_size": 5,
        "on_full": "reject",
        "heartbeat": 0.5,
        "keep": 7,
        "trace": True,
    }
    async with stepline.open_executor(**settings) as ex:
        assert ex.executor.config == Config(**settings)
    async with stepline.open_executor() as ex:
        assert ex.executor.config == Config()
    with pytest.raises(ValueError, match="workers"):
        async with stepline.open_executor(workers=0):
            pass  # pragma: no cover


async def test_the_keywords_are_exactly_history_and_configs_fields(
    autojump_clock: MockClock,
) -> None:
    parameters = inspect.signature(stepline.open_executor).parameters
    fields = attrs.fields(Config)
    assert list(parameters) == ["history", "state", "on_restart", *(f.name for f in fields)]
    for field in fields:
        assert parameters[field.name].default == field.default, field.name
        assert parameters[field.name].kind is inspect.Parameter.KEYWORD_ONLY
    defaults: dict[str, Any] = {f.name: f.default for f in fields}
    async with stepline.open_executor(**defaults) as ex:
        assert ex.executor.config == Config()
    every: dict[str, Any] = {"callback_limit": 2, "alert_repeat": 0, "allow_run": "none"}
    async with stepline.open_executor(**every) as ex:
        assert ex.executor.config == Config(**every)
        assert ex.executor.config.allow_run == frozenset()


async def test_a_misspelt_keyword_is_refused_naming_the_real_ones() -> None:
    with pytest.raises(
        TypeError, match=r"unknown keyword .wrokers.*history, state, on_restart.*workers"
    ):
        async with stepline.open_executor(wrokers=2):
            pass  # pragma: no cover
