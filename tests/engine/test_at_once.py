"""Jobs run at once: a submit whose job cannot wait, made when a worker would start it at once.

``Executor.submit_nowait`` (how ``stepline serve`` submits) runs such a job before it returns,
with no worker and no task switch. These tests pin when it may (no job waiting, a worker free,
the workers up, nothing in the job that waits) and that the job's events and records are those
a worker would have made.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from stepline import Config, Executor
from stepline.engine._interpret import completes_at_once
from stepline.engine._jobs import JobState
from stepline.spec._validate import validate_job

from ..conftest import MemoryOutbox, running_executor


def lifecycle(out: MemoryOutbox) -> list[tuple[str, str]]:
    return [(e["event"], e["job"]) for e in out.events if e["event"] in _LIFECYCLE]


_LIFECYCLE = {"accepted", "started", "finished"}


@pytest.mark.parametrize(
    "job",
    [
        {"value": 1},
        {"fail": "no", "name": "f"},
        {"steps": [{"value": 1}, {"try": {"fail": "x"}, "catch": {"value": 2}}]},
    ],
)
def test_steps_that_cannot_wait_complete_at_once(job: dict[str, Any]) -> None:
    assert completes_at_once(validate_job(job).body)


@pytest.mark.parametrize(
    "job",
    [
        {"sleep": 0},
        {"log": "hi"},  # waits while the outbox is congested
        {"value": 1, "timeout": 5},
        {"value": 1, "retry": {"attempts": 2}},
        {"steps": [{"value": 1}, {"run": ["true"]}]},
        {"par": [{"value": 1}]},
        {"tasks": {"a": {"steps": [{"value": 1}]}}},
    ],
)
def test_steps_that_may_wait_do_not(job: dict[str, Any]) -> None:
    assert not completes_at_once(validate_job(job).body)


async def test_a_value_job_is_finished_when_its_submit_returns() -> None:
    async with running_executor(workers=2) as (ex, out):
        first = ex.submit_nowait({"value": 1}, request_id="a")
        second = ex.submit_nowait({"steps": [{"value": 1}, {"value": 2}]}, request_id="b")
        assert (first.state, second.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
        assert lifecycle(out) == [
            ("accepted", "j1"),
            ("started", "j1"),
            ("finished", "j1"),
            ("accepted", "j2"),
            ("started", "j2"),
            ("finished", "j2"),
        ]
        finished = out.events[-1]
        assert (finished["output"], finished["id"], finished["state"]) == (2, "b", "succeeded")
        stats = ex.stats()
        assert (stats["running"], stats["queued"], stats["finished"]["succeeded"]) == (0, 0, 2)
        assert [r["state"] for r in ex.table.records()] == ["succeeded", "succeeded"]


async def test_a_failing_job_run_at_once_names_its_step() -> None:
    async with running_executor() as (ex, out):
        job = ex.submit_nowait({"steps": [{"value": 1}, {"fail": "boom", "name": "x"}]})
        assert job.state is JobState.FAILED
        error = out.events[-1]["error"]
        assert error == {"type": "fail", "message": "boom", "step": "steps[1]", "name": "x"}


async def test_a_waiting_job_keeps_its_place_ahead_of_one_that_could_run_at_once() -> None:
    async with running_executor(workers=1) as (ex, out):
        slow = ex.submit_nowait({"sleep": 0})  # queued: the worker has not run since
        quick = ex.submit_nowait({"value": 1})
        assert (slow.state, quick.state) == (JobState.QUEUED, JobState.QUEUED)
        await out.finished(quick.id)
        starts = [job for kind, job in lifecycle(out) if kind == "started"]
        assert starts == [slow.id, quick.id]


async def test_no_job_runs_at_once_while_every_worker_is_busy(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_executor(workers=1) as (ex, out):
        busy = await ex.submit({"sleep": 10})
        await out.wait_for(lambda e: e["event"] == "started")
        quick = ex.submit_nowait({"value": 1})
        assert (busy.state, quick.state) == (JobState.RUNNING, JobState.QUEUED)
        await out.finished(quick.id)
        assert out.of(busy.id)[-1] == "finished"


async def test_no_job_runs_at_once_before_the_workers_are_up() -> None:
    out = MemoryOutbox()
    ex = Executor(Config(), out)
    job = ex.submit_nowait({"value": 1})
    assert job.state is JobState.QUEUED
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await out.finished(job.id)
        ex.shutdown("drain")


async def test_a_job_run_at_once_traces_its_steps_as_a_worker_would() -> None:
    job = {"steps": [{"value": 1, "name": "one"}, {"try": {"fail": "x"}}]}
    traced: list[list[tuple[str, str]]] = []
    for at_once in (True, False):
        async with running_executor(trace=True) as (ex, out):
            record = ex.submit_nowait(job) if at_once else await ex.submit(job)
            await out.finished(record.id)
            traced.append([(e["step"], e["status"]) for e in out.events if e["event"] == "step"])
    assert traced[0] == traced[1]
    assert traced[0][0] == ("steps[0]", "started")


async def test_a_cancel_after_a_job_ran_at_once_finds_it_finished() -> None:
    async with running_executor() as (ex, out):
        job = ex.submit_nowait({"value": 1})
        with pytest.raises(Exception, match="already finished"):
            ex.cancel(job.id)
        assert out.of(job.id) == ["accepted", "started", "finished"]
