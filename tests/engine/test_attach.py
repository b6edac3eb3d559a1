"""The executor's attachment point: services and finish hooks plugged in from outside."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from stepline import Config, Executor, InvalidJob, UnknownTemplate
from stepline.engine._attach import ShutdownMode

from ..conftest import MemoryOutbox


class Recorder:
    """An attachment that writes down every call of its lifecycle, in order."""

    def __init__(self, log: list[str], name: str = "s") -> None:
        self.log = log
        self.name = name

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.log.append(f"{self.name}.run")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.log.append(f"{self.name}.cancelled")

    def shutdown(self, mode: ShutdownMode) -> None:
        self.log.append(f"{self.name}.shutdown:{mode}")

    async def drain(self) -> None:
        self.log.append(f"{self.name}.drain")


def executor(**config: Any) -> tuple[Executor, MemoryOutbox]:
    out = MemoryOutbox()
    return Executor(Config(heartbeat=0, **config), out), out


async def test_a_service_attached_before_run_lives_through_it_in_order() -> None:
    log: list[str] = []
    ex, out = executor()
    ex.attach(Recorder(log))
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        assert log == ["s.run"]  # running before the first job can start
        job = await ex.submit({"sleep": 1})
        ex.shutdown("drain")
        assert log == ["s.run", "s.shutdown:drain"]
        await out.finished(job.id)
    # drained only once every job had finished, then cancelled
    assert log == ["s.run", "s.shutdown:drain", "s.drain", "s.cancelled"]


async def test_services_start_and_drain_in_the_order_they_were_attached() -> None:
    log: list[str] = []
    ex, _ = executor()
    ex.attach(Recorder(log, "a"))
    ex.attach(Recorder(log, "b"))
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        ex.shutdown("cancel")
    assert log[:2] == ["a.run", "b.run"]
    assert [e for e in log if e.endswith("drain")] == ["a.drain", "b.drain"]


async def test_a_service_attached_while_running_starts_at_once() -> None:
    log: list[str] = []
    ex, _ = executor()
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        ex.attach(Recorder(log))
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["s.run"]
        ex.shutdown("drain")
    assert log == ["s.run", "s.shutdown:drain", "s.drain", "s.cancelled"]


async def test_a_service_attached_after_the_shutdown_began_hears_of_it() -> None:
    log: list[str] = []
    ex, _ = executor()
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        ex.shutdown("cancel")
        ex.attach(Recorder(log))
        assert log[-1] == "s.shutdown:cancel"
    later: list[str] = []
    ex.attach(Recorder(later))  # after run ended: told of the shutdown, never started
    assert later == ["s.shutdown:cancel"]


async def test_attached_finds_a_service_by_class() -> None:
    ex, _ = executor()
    assert ex.attached(Recorder) is None
    first, second = Recorder([]), Recorder([])
    ex.attach(first)
    ex.attach(second)
    assert ex.attached(Recorder) is first
    assert ex.attached(MemoryOutbox) is None


async def test_finish_hooks_see_every_job_after_its_finished_event() -> None:
    ex, out = executor()
    seen: list[tuple[str, str, int]] = []
    ex.on_finish(lambda job, finished: seen.append((job.id, finished["state"], len(out.events))))
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        ok = await ex.submit({"value": 1})
        bad = await ex.submit({"fail": "no"})
        await out.finished(bad.id)
        ex.shutdown("drain")
    states = {job: state for job, state, _ in seen}
    assert states == {ok.id: "succeeded", bad.id: "failed"}
    for job, _, emitted in seen:  # the hook ran right after the job's `finished`
        assert out.events[emitted - 1]["event"] == "finished"
        assert out.events[emitted - 1]["job"] == job


async def test_a_callbacks_only_hook_sees_just_the_jobs_with_callbacks() -> None:
    ex, out = executor()
    seen: list[str] = []
    ex.on_finish(lambda job, finished: seen.append(job.id), callbacks_only=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        await ex.submit({"value": 1})
        notified = await ex.submit({"steps": [{"value": 2}], "on_finish": [{"notify": "n"}]})
        await out.finished(notified.id)
        ex.shutdown("drain")
    assert seen == [notified.id]


async def test_on_finish_is_refused_while_nothing_would_run_it() -> None:
    ex, _ = executor()
    job = {"steps": [{"value": 1}], "on_finish": [{"notify": "n"}]}
    with pytest.raises(InvalidJob, match="no callbacks are attached"):
        ex.validate(job)
    ex.on_finish(lambda job, finished: None)
    assert ex.validate(job).on_finish


async def test_validate_checks_a_submit_without_queueing_it() -> None:
    ex, _ = executor()
    ex.define("t", {"steps": [{"value": "${params.x}"}], "params": {"x": {"default": 1}}})
    spec = ex.validate(template="t", params={"x": 2})
    assert spec.body is not None
    with pytest.raises(UnknownTemplate):
        ex.validate(template="nope")
    with pytest.raises(InvalidJob):
        ex.validate({"bogus": 1})
    assert ex.stats()["queued"] == 0


async def test_the_http_client_is_closed_when_run_ends() -> None:
    ex, _ = executor()
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        client = await ex.http.get()
        ex.shutdown("drain")
    assert client.is_closed
